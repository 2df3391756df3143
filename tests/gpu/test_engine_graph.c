/* test_engine_graph.c - CUDA graphs of decode steps (gpu.cuda_graphs, ops_graph_begin) replay
 * bit for bit what the same forwards compute eagerly, and the fused forms of the hybrid backend
 * (norm + FP8 quantization, q_a|kv_a and gate|up as one linear, strided SwiGLU, RoPE in one
 * launch) keep the forward within the GPU-vs-CPU tolerance.
 *
 * The model: tiny16 (tests/gpu/tiny16.h) with hidden 1024, so that q_a | kv_a (256 + 576 rows)
 * fits the buffer the fused projection writes and is fused; experts q4_K_M. Four sequences are
 * prefilled (chunks of 256 tokens; sequence 0 to just below 1024 positions, so its decode crosses
 * from the 1K length class into the 2K one), then a schedule of decode steps of 1, 2, 3 and 4
 * tokens (one per sequence, fixed pseudo-random tokens, so every run feeds the same ones), each
 * size several times in a row: its first step runs eagerly in graph mode, the second is captured
 * and launched, the rest replay. Runs, each on fresh KV caches:
 *   paused   gpu.cuda_graphs 8 with ops_cuda_graphs_pause: every graph-mode forward eager (the
 *            same kernels and arguments as a graph), the reference;
 *   graphs   the same backend with graphs on: every decode step's logits must equal paused's bit
 *            for bit; the stats must show captures and replays, and replays that put back the
 *            expert-job records another token count's forward had rewritten (the 1-token steps
 *            after the 4-token ones; at 87ab9b9 such a replay read expert ids from the routing
 *            weights); a failing forward is reported with its step and token count;
 *   off      a backend without graphs (attention split by the current longest sequence instead
 *            of the length class): reported against paused, tolerance only;
 *   cpu      the CPU engine: paused's prefill and decode logits within test_engine_gpu's
 *            tolerance (median relative L2 <= 0.1; engine_cmp.h).
 * First, at the ops level, a fused pair of FP8 linears (ops_lin_create_cat: 256 + 576 rows, as
 * q_a | kv_a's shape class) against the two linears on the same backend, for 1..16 and 40 rows:
 * every output within 1e-5 of the row's scale (fp32 summation order only; the number of
 * bit-identical rows is reported).
 * Seeds are fresh each run (TANDEM_TEST_SEED replays). Exits 77 without a GPU or without
 * TANDEM_BIN (the tandem executable, for `convert synth`).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"
#include "kernels/cpu/fpconv.h"
#include "tests/check.h"
#include "tests/gpu/engine_cmp.h"
#include "tests/gpu/tiny16.h"

#define NSEQ 4
#define GRAPH_MAX 8
#define CHUNK 256

static const int sched[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3,
                            3, 4, 4, 4, 4, 4, 1, 1, 1, 1, 2, 2, 4, 4, 1, 1, 1};
#define NSTEP ((int)(sizeof sched / sizeof sched[0]))

struct run {
    float *dec; /* per step: sched[i] rows of logits, at dec_off[i] */
    float *pre; /* the last prefill logits row of each sequence */
    struct ops_cuda_stats st;
};

static unsigned long long g_seed;

/* the token of sequence s at position p (the same in every run) */
static int32_t token_at(int s, int p, int V)
{
    unsigned long long r = g_seed ^ ((unsigned long long)s << 40) ^ (unsigned long long)p;
    r *= 0x9E3779B97F4A7C15ull;
    r ^= r >> 29;
    return 2 + (int32_t)(r % (unsigned long long)(V - 2));
}

/* prefill the sequences, then the decode schedule; logits into r */
static int drive(struct model *m, struct ops *o, const int *plen, struct run *r, char *err)
{
    const int V = model_vocab(m);
    struct tkv kv;
    if (tkv_init(&kv, model_n_layers(m), model_kv_dim(m), NSEQ, 2048, 16))
        return err_set(err, ERR_NOMEM, "kv");
    ops_cuda_stats(o, &r->st, 1);
    int rc = 0, pos[NSEQ];
    int32_t *tok = malloc(2048 * sizeof *tok);
    float *lg = malloc((size_t)CHUNK * V * sizeof(float));
    if (!tok || !lg) rc = err_set(err, ERR_NOMEM, "buffers");
    for (int s = 0; !rc && s < NSEQ; s++) {
        for (int p = 0; p < plen[s]; p++) tok[p] = token_at(s, p, V);
        for (int p0 = 0; !rc && p0 < plen[s]; p0 += CHUNK) {
            int n = plen[s] - p0 < CHUNK ? plen[s] - p0 : CHUNK;
            rc = run_seq_ex(m, &kv, s, tok + p0, n, p0, 1, lg, err);
        }
        if (!rc) memcpy(r->pre + (size_t)s * V, lg, (size_t)V * sizeof(float));
        pos[s] = plen[s];
    }
    float *out = r->dec;
    for (int i = 0; !rc && i < NSTEP; i++) {
        const int k = sched[i];
        int32_t dt[NSEQ], dp[NSEQ], sq[NSEQ], li[NSEQ];
        struct model_seq seqs[NSEQ];
        for (int s = 0; s < k; s++) {
            dt[s] = token_at(s, pos[s], V);
            dp[s] = pos[s]++;
            sq[s] = s;
            li[s] = s;
            seqs[s] = tkv_seq(&kv, s);
        }
        struct model_batch b = {.n_tokens = k,
                                .tokens = dt,
                                .pos = dp,
                                .seq = sq,
                                .n_seqs = k,
                                .seqs = seqs,
                                .n_logits = k,
                                .logits_idx = li};
        rc = model_forward(m, &kv.kv, &b, out, err);
        if (rc) { /* which step: its token count, and what ran before it */
            char e2[ERR_LEN];
            snprintf(e2, sizeof e2, "%s", err);
            err_set(err, rc, "decode step %d (%d tokens, after %d): %.180s", i, k,
                    i ? sched[i - 1] : 0, e2);
        }
        out += (size_t)k * V;
    }
    ops_cuda_stats(o, &r->st, 0);
    free(tok);
    free(lg);
    tkv_free(&kv);
    return rc;
}

/* a random FP8 view [rows][cols] with 128x128 block scales (buffers owned by the caller) */
static struct wt_view fp8_view_rand(int rows, int cols, uint8_t **q, float **sc)
{
    int sr = (rows + 127) / 128, scn = cols / 128;
    *q = malloc((size_t)rows * cols);
    *sc = malloc((size_t)sr * scn * sizeof(float));
    CHECK(*q && *sc);
    unsigned long long r = g_seed ^ (unsigned long long)rows * 7919;
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        (*q)[i] = fp_f32_to_e4m3((float)((double)(r >> 11) * 0x1.0p-53 * 600.0 - 300.0));
    }
    for (int i = 0; i < sr * scn; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        (*sc)[i] = (float)(1e-3 * (1.0 + (double)(r >> 11) * 0x1.0p-53));
    }
    struct wt_view v = {.type = QTYPE_F8_E4M3,
                        .rows = rows,
                        .cols = cols,
                        .data = *q,
                        .row_bytes = (size_t)cols,
                        .scale = *sc};
    return v;
}

/* the fused linear against its two halves on the hybrid backend: failed checks */
static int check_cat(void)
{
    const int ra = 256, rb = 576, k = 1024, R = ra + rb;
    char err[ERR_LEN];
    struct ops_params op = {.max_tokens = 64, .n_threads = 1};
    CHECK_EQ(ops_params_parse(&op, "hybrid", NULL, err), 0);
    struct ops *o = NULL;
    CHECK_EQ(ops_create(&op, &o, err), 0);
    uint8_t *qa, *qb;
    float *sa, *sb;
    struct wt_view va = fp8_view_rand(ra, k, &qa, &sa), vb = fp8_view_rand(rb, k, &qb, &sb);
    struct ops_lin *la = NULL, *lb = NULL, *lab = NULL;
    CHECK_EQ(ops_lin_create(o, &va, &la, err), 0);
    CHECK_EQ(ops_lin_create(o, &vb, &lb, err), 0);
    CHECK_EQ(ops_lin_create_cat(o, &va, &vb, &lab, err), 0);
    const int nmax = 40;
    float *hx = malloc((size_t)nmax * k * 4), *h1 = malloc((size_t)nmax * R * 4),
          *h2 = malloc((size_t)nmax * R * 4);
    CHECK(hx && h1 && h2);
    for (int i = 0; i < nmax * k; i++)
        hx[i] = (float)(((i * 2654435761u) >> 7) % 2001) / 1000.0f - 1;
    float *x = ops_alloc(o, (size_t)nmax * k * 4), *ya = ops_alloc(o, (size_t)nmax * ra * 4),
          *yb = ops_alloc(o, (size_t)nmax * rb * 4), *yab = ops_alloc(o, (size_t)nmax * R * 4);
    CHECK(x && ya && yb && yab);
    ops_upload(o, x, hx, (size_t)nmax * k * 4);
    int fails = 0;
    for (int n = 1; n <= nmax; n = n < 16 ? n + 1 : nmax) {
        ops_linear(o, la, x, n, ya);
        ops_linear(o, lb, x, n, yb);
        ops_linear(o, lab, x, n, yab);
        float *ha = malloc((size_t)n * ra * 4), *hb = malloc((size_t)n * rb * 4);
        CHECK(ha && hb);
        ops_download(o, ha, ya, (size_t)n * ra * 4);
        ops_download(o, hb, yb, (size_t)n * rb * 4);
        ops_download(o, h2, yab, (size_t)n * R * 4);
        CHECK_EQ(ops_error(o, err), 0);
        int same = 0, bad = 0;
        double worst = 0;
        for (int t = 0; t < n; t++) {
            double amax = 1e-30;
            for (int j = 0; j < R; j++) {
                float v = j < ra ? ha[t * ra + j] : hb[t * rb + j - ra];
                h1[(size_t)t * R + j] = v;
                amax = fmax(amax, fabs(v));
            }
            same += !memcmp(h1 + (size_t)t * R, h2 + (size_t)t * R, (size_t)R * 4);
            for (int j = 0; j < R; j++) {
                double e = fabs((double)h1[(size_t)t * R + j] - h2[(size_t)t * R + j]) / amax;
                worst = fmax(worst, e);
                bad += !(e <= 1e-5);
            }
        }
        if (bad) {
            printf("FAIL cat n=%d: %d outputs off by more than 1e-5 of their row's max (worst "
                   "%.2e)\n",
                   n, bad, worst);
            fails++;
        }
        if (n == 1 || n == 16 || n == nmax)
            printf("cat n=%d: fused q_a|kv_a-shaped linear vs two: %d/%d rows bit-identical, "
                   "worst %.2e of the row max\n",
                   n, same, n, worst);
        free(ha);
        free(hb);
        if (n == nmax) break;
    }
    ops_free(o, x);
    ops_free(o, ya);
    ops_free(o, yb);
    ops_free(o, yab);
    ops_lin_destroy(o, la);
    ops_lin_destroy(o, lb);
    ops_lin_destroy(o, lab);
    ops_destroy(o);
    free(qa);
    free(qb);
    free(sa);
    free(sb);
    free(hx);
    free(h1);
    free(h2);
    return fails;
}

int main(void)
{
    g_seed = check_seed();
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) SKIP("no CUDA device");
    if (!getenv("TANDEM_BIN")) SKIP("TANDEM_BIN unset (convert synth)");
    char base[] = "/tmp/tandem-graph-XXXXXX", cfg[600], dir[600], err[ERR_LEN];
    CHECK(mkdtemp(base) != NULL);
    snprintf(cfg, sizeof cfg, "%s/tiny16w.json", base);
    snprintf(dir, sizeof dir, "%s/model", base);
    CHECK_EQ(tiny16_write_config_hidden(cfg, 1024), 0);
    int rc = make_synth(cfg, g_seed % 1000000007ull, dir, "--experts q4_K_M");
    if (rc) {
        printf("synth failed (%d), see %s.log\n", rc, dir);
        return 1;
    }
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK_EQ(wt_validate(w, err), 0);
    const int V = wt_hparams(w)->vocab_size;
    int plen[NSEQ] = {1024 - 5, 40 + (int)(g_seed % 200), 300, 17};
    size_t ndec = 0;
    for (int i = 0; i < NSTEP; i++) ndec += (size_t)sched[i];
    struct run runs[4];
    for (int i = 0; i < 4; i++) {
        runs[i].dec = malloc(ndec * V * sizeof(float));
        runs[i].pre = malloc((size_t)NSEQ * V * sizeof(float));
        CHECK(runs[i].dec && runs[i].pre);
    }
    struct run *paused = &runs[0], *graphs = &runs[1], *off = &runs[2], *cpu = &runs[3];
    int fails = check_cat();

    /* paused, then graphs, on one backend */
    struct ops_params op = {.max_tokens = CHUNK, .n_threads = 0, .pin = 0, .gpu_graphs = GRAPH_MAX};
    CHECK_EQ(ops_params_parse(&op, "hybrid", NULL, err), 0);
    struct ops *o = NULL;
    struct model *m = NULL;
    CHECK_EQ(tm_create(w, &op, &o, &m, err), 0);
    ops_cuda_graphs_pause(o, 1);
    if (drive(m, o, plen, paused, err)) {
        printf("FAIL paused: %s\n", err);
        return 1;
    }
    ops_cuda_graphs_pause(o, 0);
    if (drive(m, o, plen, graphs, err)) {
        printf("FAIL graphs: %s\n", err);
        return 1;
    }
    const struct ops_cuda_stats *gs = &graphs->st;
    printf("graphs: %lld replayed, %lld captured, %lld eager graph-mode forwards, %d graphs held; "
           "%lld expert calls; %lld expert-job records put back before a replay\n",
           gs->graph_replays, gs->graph_captures, gs->graph_eager, gs->graphs, gs->moe_calls,
           gs->graph_job_restores);
    if (paused->st.graph_replays || paused->st.graph_captures) {
        printf("FAIL paused: %lld replays, %lld captures\n", paused->st.graph_replays,
               paused->st.graph_captures);
        fails++;
    }
    /* 4 token counts, seq 0's two length classes at batch 1: at least 5 captures; most steps
     * replay */
    if (gs->graph_captures < 5 || gs->graph_replays < NSTEP / 3) {
        printf("FAIL graphs: expected >= 5 captures and >= %d replays\n", NSTEP / 3);
        fails++;
    }
    /* the schedule returns to 1 token after 4: those replays find their expert-job records
     * rewritten by the other counts' forwards (the failure at 87ab9b9: expert ids read from the
     * routing weights), so they must have put the captured inputs back */
    if (gs->graph_job_restores < 1) {
        printf("FAIL graphs: no replay put its expert-job records back (the schedule should need "
               "it)\n");
        fails++;
    }
    size_t off0 = 0;
    int same = 0;
    for (int i = 0; i < NSTEP; i++) {
        size_t nb = (size_t)sched[i] * V * sizeof(float);
        if (memcmp(paused->dec + off0, graphs->dec + off0, nb)) {
            double e = rel_err_f(graphs->dec + off0, paused->dec + off0, sched[i] * V);
            printf("FAIL step %d (%d tokens): graph logits differ from eager (rel L2 %.3e)\n", i,
                   sched[i], e);
            fails++;
        } else {
            same++;
        }
        off0 += (size_t)sched[i] * V;
    }
    printf("graphs vs paused: %d/%d decode steps bit-identical\n", same, NSTEP);
    if (memcmp(paused->pre, graphs->pre, (size_t)NSEQ * V * sizeof(float))) {
        printf("FAIL prefill logits differ between the two runs (no graphs there)\n");
        fails++;
    }
    tm_destroy(o, m);

    /* off: plain eager (attention split by the current length) */
    op.gpu_graphs = 0;
    CHECK_EQ(tm_create(w, &op, &o, &m, err), 0);
    if (drive(m, o, plen, off, err)) {
        printf("FAIL off: %s\n", err);
        return 1;
    }
    tm_destroy(o, m);
    double eoff = rel_err_f(off->dec, paused->dec, (int)(ndec * V));
    printf("off vs paused (length-class attention splits): rel L2 %.3e over all decode logits\n",
           eoff);

    /* the CPU engine */
    struct ops_params cp = {.max_tokens = CHUNK, .n_threads = 0, .pin = 0};
    CHECK_EQ(ops_params_parse(&cp, "cpu", NULL, err), 0);
    CHECK_EQ(tm_create(w, &cp, &o, &m, err), 0);
    if (drive(m, o, plen, cpu, err)) {
        printf("FAIL cpu: %s\n", err);
        return 1;
    }
    tm_destroy(o, m);
    fails += ecmp_compare("prefill", paused->pre, cpu->pre, V, NSEQ);
    fails += ecmp_compare("decode", paused->dec, cpu->dec, V, (int)ndec);

    for (int i = 0; i < 4; i++) {
        free(runs[i].dec);
        free(runs[i].pre);
    }
    wt_close(w);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) printf("could not remove %s\n", base);
    printf("%s (%d failed checks)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
