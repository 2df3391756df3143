/* test_engine_hot.c - hot experts (gpu.hot_experts: routed experts kept in device memory as their
 * GGML blocks, engine/model/hot_experts.h + ops_cuda_stream.c) against all-CPU placement.
 *
 * The synth model, the forwards and the tolerance are tests/gpu/engine_cmp.h's (shared with
 * test_engine_stream.c): a fresh tiny16 with 16 routed experts, top-4, experts q4_K_M; a prefill
 * of 256 tokens, a chunk of 96, forwards of 4 tokens and of 1 token. The CPU engine's run is the
 * reference; its routing counts (hot_experts_attach on the CPU backend) are saved to a file and
 * read back (ec_save / ec_load) for the configurations that choose from counts. Hybrid
 * configurations (each on a fresh backend with ops_params.gpu_hot_experts):
 *   off      hybrid, no hot experts (the distance the GPU forward has anyway);
 *   uniform  no counts: room for 4 experts a layer: experts 0..3 of every MoE layer (checked
 *            from the report: 4 x 2 chosen, not from counts), the rest on the CPU pool;
 *   counts   the CPU run's counts: room for half the experts (placed twice: first the uniform
 *            set, then replaced by this one): the most routed half, which must take at least
 *            half of the recorded routes;
 *   all      room for every expert: no route left to the CPU pool;
 *   stream   the counts' half hot plus gpu.prefill_experts (split_tokens 1, min_tokens 16,
 *            buffer 1 MiB): prefill chunks stream the other experts (hot ones need no copy),
 *            decode-size forwards split between the hot experts and the CPU pool.
 * Asserted per configuration: the logits against the CPU engine's (median relative L2 <= 0.1,
 * finite: engine_cmp.h), and from ops_cuda_stats / the counts that the split happened as
 * configured (hot routes on the GPU, the rest on the CPU pool, every route counted once: the
 * counts the hybrid run recorded equal the number of (token, expert) routes and their hot part
 * equals the backend's hot-route statistic).
 * Seeds are fresh each run (TANDEM_TEST_SEED replays). Exits 77 without a GPU or without
 * TANDEM_BIN (the tandem executable, for `convert synth`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "common/err.h"
#include "engine/model/expert_counts.h"
#include "engine/model/hot_experts.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"
#include "tests/check.h"
#include "tests/gpu/engine_cmp.h"

struct setup {
    const struct wt_hparams *hp;
    struct expert_counts *c;     /* the run's counts (attached; hot set chosen from them) */
    double experts_per_layer;    /* the budget: this many experts a layer (0: none placed) */
    int replace;                 /* first place the uniform set of 4 a layer, then this one */
    struct hot_report rep;       /* what was placed */
    struct expert_counts *fresh; /* counts with nothing recorded (for the replaced first set) */
    int same_size;               /* every expert takes the same bytes (exact counts checkable) */
};

static int place(void *ud, struct ops *o, struct model *m, char *err)
{
    struct setup *s = ud;
    int rc = hot_experts_attach(m, o, s->c, err);
    if (rc || s->experts_per_layer <= 0) return rc;
    size_t eb = ops_moe_hot_bytes(o, model_moe(m, 0, NULL), 0);
    if (!eb) return err_set(err, ERR_INTERNAL, "the backend offers no hot experts");
    int M = ec_shape(s->c)->moe_layers;
    s->same_size = 1;
    for (int i = 0; i < M; i++)
        for (int e = 0; e < ec_shape(s->c)->n_expert; e++)
            s->same_size &= ops_moe_hot_bytes(o, model_moe(m, i, NULL), e) == eb;
    if (s->replace) {
        rc = hot_experts_place(m, o, s->fresh, 4.0 * M * (double)eb + eb / 2, &s->rep, err);
        if (rc) return rc;
    }
    /* the experts of one layer may differ in size (mixed types): half an expert of slack */
    return hot_experts_place(m, o, s->c, s->experts_per_layer * M * (double)eb + eb / 2, &s->rep,
                             err);
}

int main(void)
{
    unsigned long long seed = check_seed();
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) SKIP("no CUDA device");
    if (!getenv("TANDEM_BIN")) SKIP("TANDEM_BIN unset (convert synth)");
    char base[] = "/tmp/tandem-hot-XXXXXX", dir[600], file[600], err[ERR_LEN];
    if (ecmp_make_model(base, seed, dir, sizeof dir)) return 1;
    snprintf(file, sizeof file, "%s/routes.counts", base);
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK_EQ(wt_validate(w, err), 0);
    const struct wt_hparams *hp = wt_hparams(w);
    const int V = hp->vocab_size, n = ECMP_N, E = hp->n_routed;
    int M = 0;
    for (int l = 0; l < hp->n_layers; l++) M += wt_layer_is_moe(hp, l) != 0;
    const long long routes = (long long)n * hp->top_k * M;
    int32_t *tok = ecmp_tokens(seed, V, n);
    CHECK(tok != NULL);
    /* the CPU reference, recording its routes */
    struct ecmp_run cpu = {.lg = malloc((size_t)n * V * sizeof(float))};
    struct setup cs = {.hp = hp};
    CHECK_EQ(ec_create(hp, &cs.c, err), 0);
    struct ops_params op = {.max_tokens = ECMP_P1, .n_threads = 0, .pin = 0};
    CHECK_EQ(ops_params_parse(&op, "cpu", NULL, err), 0);
    CHECK_EQ(ecmp_drive(w, &op, tok, place, &cs, &cpu, err), 0);
    CHECK_EQ(ec_total(cs.c), routes);
    CHECK_EQ(ec_save(cs.c, file, err), 0);
    printf("CPU run: %lld routes over %d MoE layers x %d experts, saved to %s\n", routes, M, E,
           file);

    struct cfgs {
        const char *tag;
        int counts;       /* choose from the CPU run's counts (read from the file) */
        double per_layer; /* budget in experts a layer */
        int replace, stream;
    } cf[] = {
        {"off", 0, 0, 0, 0},       {"uniform", 0, 4, 0, 0},      {"counts", 1, E / 2.0, 1, 0},
        {"all", 0, E + 1.0, 0, 0}, {"stream", 1, E / 2.0, 0, 1},
    };
    const int NC = (int)(sizeof cf / sizeof cf[0]);
    int fails = 0;
    for (int i = 0; i < NC; i++) {
        struct ecmp_run g = {.lg = malloc((size_t)n * V * sizeof(float))};
        struct setup s = {.hp = hp, .experts_per_layer = cf[i].per_layer, .replace = cf[i].replace};
        CHECK_EQ(ec_create(hp, &s.c, err), 0);
        CHECK_EQ(ec_create(hp, &s.fresh, err), 0);
        if (cf[i].counts) CHECK_EQ(ec_load(s.c, file, err), 0);
        const uint64_t loaded = ec_total(s.c);
        struct ops_params q = {.max_tokens = ECMP_P1,
                               .n_threads = 0,
                               .pin = 0,
                               .gpu_hot_experts = cf[i].per_layer > 0,
                               .gpu_prefill_experts = cf[i].stream,
                               .gpu_prefill_min_tokens = cf[i].stream ? 16 : 0,
                               .gpu_stream_buffer_mb = cf[i].stream ? 1 : 0,
                               .gpu_prefill_split_tokens = cf[i].stream ? 1 : 0};
        CHECK_EQ(ops_params_parse(&q, "hybrid", NULL, err), 0);
        int rc = ecmp_drive(w, &q, tok, place, &s, &g, err);
        if (rc) {
            printf("FAIL %s: %s\n", cf[i].tag, err);
            fails++;
            goto next;
        }
        const struct ops_cuda_stats *st = &g.st;
        const struct ec_choice *ch = &s.rep.ch;
        char d[512] = "";
        if (cf[i].per_layer > 0) hot_experts_describe(&s.rep, d, sizeof d);
        printf("%-8s hot: %s\n", cf[i].tag, cf[i].per_layer > 0 ? d : "off");
        printf("%-8s %lld expert calls on layers with hot experts: %lld routes on hot experts, "
               "%lld elsewhere; %d experts (%.1f MiB) held; streamed %lld layer calls, %lld "
               "experts\n",
               cf[i].tag, st->hot_calls, st->hot_gpu_pairs, st->hot_rest_pairs, st->hot_experts,
               st->hot_bytes / (1 << 20), st->stream_layers, st->stream_gpu_experts);
        fails += ecmp_compare(cf[i].tag, g.lg, cpu.lg, V, n);
        /* every route counted once, the hot part as the backend saw it */
        if ((long long)(ec_total(s.c) - loaded) != routes || (long long)ec_routes(s.c) != routes ||
            (long long)ec_hot_routes(s.c) != st->hot_gpu_pairs) {
            printf("FAIL %s: counted %llu routes (%llu hot), expected %lld (%lld hot)\n", cf[i].tag,
                   (unsigned long long)ec_routes(s.c), (unsigned long long)ec_hot_routes(s.c),
                   routes, st->hot_gpu_pairs);
            fails++;
        }
        if (cf[i].per_layer <= 0) {
            if (st->hot_calls || st->hot_experts) {
                printf("FAIL off: hot experts used\n");
                fails++;
            }
            goto next;
        }
        int want = cf[i].per_layer > E ? E * M : (int)cf[i].per_layer * M;
        if (!s.same_size)
            printf("note %s: experts differ in size: the chosen count is not checked\n", cf[i].tag);
        else if (ch->chosen != want || st->hot_experts != want || ch->layers != M) {
            printf("FAIL %s: %d experts chosen (%d held) in %d layers, expected %d in %d\n",
                   cf[i].tag, ch->chosen, st->hot_experts, ch->layers, want, M);
            fails++;
        }
        if (st->hot_calls < 1 || st->hot_gpu_pairs < 1) {
            printf("FAIL %s: no route computed by a hot expert\n", cf[i].tag);
            fails++;
        }
        if (st->hot_gpu_pairs + st->hot_rest_pairs != routes) {
            printf("FAIL %s: hot %lld + rest %lld routes != %lld\n", cf[i].tag, st->hot_gpu_pairs,
                   st->hot_rest_pairs, routes);
            fails++;
        }
        if (cf[i].per_layer > E && st->hot_rest_pairs) {
            printf("FAIL all: %lld routes not on hot experts\n", st->hot_rest_pairs);
            fails++;
        }
        if (cf[i].per_layer <= E && !st->hot_rest_pairs) {
            printf("FAIL %s: every route on a hot expert (no CPU part)\n", cf[i].tag);
            fails++;
        }
        if (!cf[i].counts && ch->from_counts) {
            printf("FAIL %s: chose from counts\n", cf[i].tag);
            fails++;
        }
        if (cf[i].counts && (!ch->from_counts || 2 * ch->routes < ch->total)) {
            printf("FAIL %s: the chosen half takes %llu of %llu recorded routes\n", cf[i].tag,
                   (unsigned long long)ch->routes, (unsigned long long)ch->total);
            fails++;
        }
        if (cf[i].stream && (st->stream_layers < 2 * M || st->stream_gpu_experts < 1 ||
                             st->stream_bytes <= 0 || st->stream_cpu_pairs)) {
            printf("FAIL stream: %lld layer calls streamed %lld experts (%.0f bytes), %lld CPU "
                   "routes\n",
                   st->stream_layers, st->stream_gpu_experts, st->stream_bytes,
                   st->stream_cpu_pairs);
            fails++;
        }
    next:
        ec_destroy(s.c);
        ec_destroy(s.fresh);
        free(g.lg);
    }
    ec_destroy(cs.c);
    free(cpu.lg);
    free(tok);
    wt_close(w);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) printf("could not remove %s\n", base);
    printf("%s (%d failed checks)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
