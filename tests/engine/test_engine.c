/* test_engine.c - the engine end to end on the tiny synth model, through eng_create/eng_submit.
 *
 * Builds `tandem convert synth --preset tiny` into a temporary directory (skips, exit 77, when
 * that is not possible), then checks with greedy decoding:
 *   - several concurrent requests produce exactly the tokens each produces alone;
 *   - a KV cache too small for all of them forces preemption, and the output is unchanged;
 *   - requests sharing a prompt prefix reuse cached blocks (n_cached > 0) and produce the same
 *     tokens as without the prefix cache;
 *   - seeded sampling is reproducible (same seed, same batch composition);
 *   - the same with engine.kv_cache_type = f32, and with engine.defer_experts = 2 (expert
 *     deferral; a value above the model's experts per token is a load error naming it);
 *   - cancellation and context overflow; block accounting after every phase (eng_debug_check).
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../config/cfg.h"
#include "../../engine/engine.h"
#include "../../engine/sched/sched.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

#define NREQ 6
#define MAXG 64

struct res {
    int32_t toks[MAXG];
    float gap[MAXG]; /* logprob of the best minus the second best token */
    int n, done, n_cached;
    enum eng_finish fin;
};

static void on_event(void *ud, const struct eng_event *ev)
{
    struct res *r = ud;
    pthread_mutex_lock(&mu);
    if (ev->kind == ENG_EV_TOKEN && r->n < MAXG) {
        r->gap[r->n] = ev->n_top == 2 ? ev->top_logprobs[0] - ev->top_logprobs[1] : 1e9f;
        r->toks[r->n++] = ev->token;
    }
    if (ev->kind == ENG_EV_DONE) {
        r->done = 1;
        r->fin = ev->finish;
        r->n_cached = ev->n_cached;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static char model_dir[512];
static const char *defer = "0"; /* engine.defer_experts of the engines made next */

static struct engine *make_engine_kv(const char *kv_blocks, const char *max_running,
                                     const char *prefix, const char *batch, const char *kv_type)
{
    struct cfg c;
    char err[ERR_LEN];
    cfg_init_defaults(&c);
    CHECK_EQ(cfg_set(&c, "engine", "kv_cache_type", kv_type, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "model", "path", model_dir, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "kv_blocks", kv_blocks, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "kv_block_tokens", "8", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "max_running", max_running, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "prefix_cache", prefix, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "max_batch_tokens", batch, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "cpu", "threads", "2", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "cpu", "pin", "0", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "defer_experts", defer, "test", err), 0);
    struct engine *e = NULL;
    if (eng_create(&c, NULL, NULL, &e, err) != 0) {
        fprintf(stderr, "eng_create: %s\n", err);
        exit(1);
    }
    cfg_fini(&c);
    return e;
}

static struct engine *make_engine(const char *kv_blocks, const char *max_running,
                                  const char *prefix, const char *batch)
{
    return make_engine_kv(kv_blocks, max_running, prefix, batch, "bf16");
}

static void check_engine(struct engine *e)
{
    char err[ERR_LEN];
    if (eng_debug_check(e, err) != 0) {
        fprintf(stderr, "engine accounting: %s\n", err);
        exit(1);
    }
}

static int32_t prompts[NREQ][200];
static int n_prompt[NREQ];

static uint64_t submit(struct engine *e, int i, struct res *r, float temp, uint64_t seed,
                       int max_tok)
{
    char err[ERR_LEN];
    struct eng_request q;
    memset(&q, 0, sizeof q);
    q.prompt = malloc(sizeof(int32_t) * (size_t)n_prompt[i]);
    memcpy(q.prompt, prompts[i], sizeof(int32_t) * (size_t)n_prompt[i]);
    q.n_prompt = n_prompt[i];
    q.samp.temperature = temp;
    q.samp.top_p = 1.0f;
    q.samp.repetition_penalty = 1.0f;
    q.samp.seed = seed;
    q.samp.top_logprobs = 2;
    q.max_tokens = max_tok;
    q.ignore_eos = 1;
    q.on_event = on_event;
    q.ud = r;
    memset(r, 0, sizeof *r);
    if (eng_submit(e, &q, err) != 0) {
        fprintf(stderr, "submit: %s\n", err);
        exit(1);
    }
    return q.id;
}

static void wait_all(struct res *r, int n)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++)
        while (!r[i].done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void run(struct engine *e, struct res *r, float temp, int concurrent)
{
    for (int i = 0; i < NREQ; i++) {
        submit(e, i, &r[i], temp, 1000 + (uint64_t)i, 16);
        if (!concurrent) wait_all(&r[i], 1);
    }
    wait_all(r, NREQ);
    for (int i = 0; i < NREQ; i++) CHECK_EQ(r[i].fin, ENG_FINISH_LENGTH);
    check_engine(e);
}

/* b must reproduce a token for token. Greedy decoding of a random tiny model meets genuine
 * near-ties: the forward's results differ in the last bits with the batch size (~1e-6 in
 * logprobs: the expert kernels switch from the 256-bit to the 512-bit variant, and to AMX, by
 * tokens per expert, which changes float summation order; chunked prefill is bit-exact), and a
 * last-bit difference can flip an FP8 activation code downstream, which moves logits by ~1e-2
 * per flip; over a few decoded tokens such flips compound (on this random model the reference's
 * top-2 logprob gap at a divergence was measured up to 0.18, in ~2% of runs: seeds
 * 9609133196882652922, 2898435280422850514). So a divergence is accepted only where that gap is
 * below 0.3, at most twice per run (a batching bug diverges in most requests, at large gaps),
 * and the rest of that request is then not compared. */
static int n_near_ties;
static void same(const char *what, const struct res *a, const struct res *b)
{
    for (int i = 0; i < NREQ; i++) {
        CHECK_EQ(a[i].n, b[i].n);
        for (int j = 0; j < a[i].n; j++) {
            if (a[i].toks[j] == b[i].toks[j]) continue;
            fprintf(stderr, "%s: request %d token %d: %d vs %d, top-2 logprob gap %.3g\n", what, i,
                    j, (int)a[i].toks[j], (int)b[i].toks[j], (double)a[i].gap[j]);
            CHECK(a[i].gap[j] < 0.3f);
            n_near_ties++;
            break;
        }
    }
}

int main(void)
{
    unsigned long long seed = check_seed();
    const char *bin = getenv("TANDEM_BIN");
    if (!bin) SKIP("TANDEM_BIN not set");
    char tmpl[] = "/tmp/tandem-test-engine-XXXXXX";
    if (!mkdtemp(tmpl)) SKIP("no temporary directory");
    snprintf(model_dir, sizeof model_dir, "%s/tiny", tmpl);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' convert synth --preset tiny --seed %llu --out '%s' >'%s.log' 2>&1", bin,
             seed % 1000, model_dir, model_dir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
        if (system(cmd)) {
        }
        SKIP("tandem convert synth --preset tiny is not available");
    }

    struct engine *e = make_engine("256", "1", "0", "256");
    struct eng_info info;
    eng_info(e, &info);
    CHECK(info.vocab_size > 10);
    srand((unsigned)seed);
    int32_t shared[64];
    for (int j = 0; j < 64; j++) shared[j] = 3 + rand() % (info.vocab_size - 3);
    for (int i = 0; i < NREQ; i++) {
        int shared_part = i >= NREQ / 2 ? 48 : 0; /* the second half share 48 tokens */
        n_prompt[i] = shared_part + 5 + rand() % 60;
        for (int j = 0; j < n_prompt[i]; j++)
            prompts[i][j] = j < shared_part ? shared[j] : 3 + rand() % (info.vocab_size - 3);
    }

    /* alone, no prefix cache: the reference */
    static struct res alone[NREQ], sampled_alone[NREQ], r[NREQ];
    run(e, alone, 0.0f, 0);
    run(e, sampled_alone, 0.8f, 0);
    /* context overflow */
    {
        char err[ERR_LEN];
        struct eng_request q;
        memset(&q, 0, sizeof q);
        q.n_prompt = info.context;
        q.prompt = calloc((size_t)q.n_prompt, sizeof(int32_t));
        q.max_tokens = 1;
        q.samp.top_p = 1;
        q.samp.repetition_penalty = 1;
        q.on_event = on_event;
        CHECK_EQ(eng_submit(e, &q, err), ERR_CTX_OVERFLOW);
        free(q.prompt);
    }
    eng_destroy(e);

    /* concurrent, with chunked prefill */
    e = make_engine("256", "8", "0", "32");
    run(e, r, 0.0f, 1);
    same("concurrent greedy", alone, r);
    eng_destroy(e);
    /* seeded sampling is reproducible for the same batch composition (each alone again). Across
     * compositions it is not promised: the forward's float results may differ in the last bits
     * with the batch, which can move a draw to a neighbouring token. */
    e = make_engine("256", "1", "0", "256");
    run(e, r, 0.8f, 0);
    same("sampled again", sampled_alone, r);
    eng_destroy(e);

    /* preemption: 20 blocks of 8 tokens for 6 requests of up to ~130 tokens */
    e = make_engine("20", "8", "0", "64");
    run(e, r, 0.0f, 1);
    same("preemption", alone, r);
    struct eng_stats st;
    eng_stats(e, &st);
    CHECK(st.preemptions_total > 0);
    eng_destroy(e);

    /* the f32 KV cache (engine.kv_cache_type): concurrent requests with chunked prefill, the
     * prefix cache and preemption (20 blocks) give each request's tokens alone with that cache */
    {
        static struct res alone32[NREQ];
        e = make_engine_kv("256", "1", "0", "256", "f32");
        run(e, alone32, 0.0f, 0);
        eng_destroy(e);
        e = make_engine_kv("20", "8", "1", "32", "f32");
        run(e, r, 0.0f, 1);
        same("f32 cache concurrent", alone32, r);
        eng_destroy(e);
    }

    /* expert deferral: likewise each request's tokens alone with it (it decides per token, so
     * batching, chunking and preemption change nothing); greedy output differs from without */
    {
        static struct res alone_d[NREQ];
        defer = "2";
        e = make_engine("256", "1", "0", "256");
        run(e, alone_d, 0.0f, 0);
        eng_destroy(e);
        e = make_engine_kv("20", "8", "1", "32", "bf16");
        run(e, r, 0.0f, 1);
        same("deferral concurrent", alone_d, r);
        eng_destroy(e);
        defer = "0";
        int differ = 0;
        for (int i = 0; i < NREQ; i++)
            differ += alone_d[i].n != alone[i].n ||
                      memcmp(alone_d[i].toks, alone[i].toks, sizeof(int32_t) * alone[i].n) != 0;
        fprintf(stderr, "deferral 2: %d of %d greedy outputs differ from without\n", differ, NREQ);
        CHECK(differ > 0); /* the option reaches the model */
    }

    /* prefix reuse: sequential, then concurrent */
    e = make_engine("256", "8", "1", "64");
    run(e, r, 0.0f, 0);
    same("prefix sequential", alone, r);
    CHECK(r[NREQ - 1].n_cached >= 40);
    run(e, r, 0.0f, 1);
    same("prefix concurrent", alone, r);
    eng_stats(e, &st);
    CHECK(st.prefix_cache_hits > 0);
    /* cancellation mid-generation; then shutdown with a request in flight */
    {
        static struct res rc, rd;
        uint64_t id = submit(e, 0, &rc, 0.0f, 1, 100000);
        pthread_mutex_lock(&mu);
        while (rc.n < 2 && !rc.done) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        eng_cancel(e, id);
        wait_all(&rc, 1);
        CHECK_EQ(rc.fin, ENG_FINISH_CANCELLED);
        check_engine(e);
        submit(e, 1, &rd, 0.0f, 1, 100000);
        eng_destroy(e);
        CHECK(rd.done);
        CHECK_EQ(rd.fin, ENG_FINISH_CANCELLED);
    }

    /* load errors are clear errors, not crashes */
    {
        struct cfg c;
        char err[ERR_LEN] = "";
        struct engine *bad = NULL;
        cfg_init_defaults(&c);
        CHECK_EQ(cfg_set(&c, "model", "path", "/nonexistent/model", "test", err), 0);
        CHECK(eng_create(&c, NULL, NULL, &bad, err) != 0);
        CHECK(bad == NULL);
        CHECK_CONTAINS(err, "/nonexistent/model");
        cfg_fini(&c);
        /* more deferred experts than the model routes: refused, naming the option */
        cfg_init_defaults(&c);
        CHECK_EQ(cfg_set(&c, "model", "path", model_dir, "test", err), 0);
        CHECK_EQ(cfg_set(&c, "engine", "defer_experts", "9", "test", err), 0);
        CHECK_EQ(cfg_set(&c, "cpu", "threads", "2", "test", err), 0);
        CHECK_EQ(eng_create(&c, NULL, NULL, &bad, err), ERR_CONFIG);
        CHECK(bad == NULL);
        CHECK_CONTAINS(err, "engine.defer_experts = 9");
        cfg_fini(&c);
        /* an EOS id outside the vocabulary would never stop a request: refused at load */
        snprintf(cmd, sizeof cmd,
                 "cp '%s/config.json' '%s/config.json.orig' && "
                 "sed -i 's/\"eos_token_id\": *1/\"eos_token_id\": 999999/' '%s/config.json'",
                 model_dir, model_dir, model_dir);
        CHECK_EQ(system(cmd), 0);
        cfg_init_defaults(&c);
        CHECK_EQ(cfg_set(&c, "model", "path", model_dir, "test", err), 0);
        CHECK(eng_create(&c, NULL, NULL, &bad, err) != 0);
        CHECK(bad == NULL);
        CHECK_CONTAINS(err, "eos_token_id 999999");
        cfg_fini(&c);
        snprintf(cmd, sizeof cmd, "mv '%s/config.json.orig' '%s/config.json'", model_dir,
                 model_dir);
        CHECK_EQ(system(cmd), 0);
        /* the model without its experts file: a tensor is missing */
        snprintf(cmd, sizeof cmd, "rm -f '%s/experts.gguf'", model_dir);
        CHECK_EQ(system(cmd), 0);
        cfg_init_defaults(&c);
        CHECK_EQ(cfg_set(&c, "model", "path", model_dir, "test", err), 0);
        err[0] = 0;
        CHECK(eng_create(&c, NULL, NULL, &bad, err) != 0);
        CHECK(bad == NULL);
        CHECK(err[0] != 0);
        fprintf(stderr, "missing experts: %s\n", err);
        cfg_fini(&c);
    }

    CHECK(n_near_ties <= 2); /* a rare event, not the rule */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    if (system(cmd)) {
    }
    return 0;
}
