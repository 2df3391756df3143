/* bench_model.c - CPU-only prefill and decode throughput of the model forward.
 *
 *   bench_model [--model DIR | --preset tiny|v3-slice [--synth-args "..."]] [--prompt N]
 *               [--decode N] [--threads N] [--isa X] [--chunk N] [--defer N]
 *
 * Without --model it makes a synth model with `tandem convert synth --preset P` in a temporary
 * directory (default preset tiny). Prefill: one forward of --prompt tokens (in --chunk pieces,
 * default all; logits for the last token of each chunk only, as a server does). Decode: --decode
 * single-token forwards over the KV cache after the prompt. Printed beside the results, as the
 * ceiling: the weight bytes one decode step reads (every non-expert tensor plus top_k experts per
 * MoE layer) and this machine's single-pass read bandwidth, and the bandwidth bound on decode
 * tokens/s they imply. --defer N: expert deferral (engine.defer_experts) with N experts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/weights/weights.h"
#include "tests/engine/model_util.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* single-thread sequential read bandwidth over 512 MiB (GB/s), best of 3 */
static double read_bw(void)
{
    size_t n = (size_t)512 << 20;
    uint64_t *b = malloc(n);
    if (!b) return 0;
    memset(b, 1, n);
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < n / 8; i += 4) {
            s0 += b[i];
            s1 += b[i + 1];
            s2 += b[i + 2];
            s3 += b[i + 3];
        }
        sink += s0 + s1 + s2 + s3;
        double gbs = n / (now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    (void)sink;
    free(b);
    return best;
}

/* bytes of weights one decode token reads: all tensors but routed experts, plus top_k experts
 * per MoE layer (an estimate: the shares of the expert tensors) */
static double decode_bytes(const struct wt_model *w)
{
    const struct wt_hparams *hp = wt_hparams(w);
    double dense = 0, experts = 0;
    for (int i = 0; i < wt_count(w); i++) {
        const struct wt_tensor *t = wt_at(w, i);
        if (wt_name_is_routed_expert(t->name)) experts += t->nbytes;
        else if (strcmp(t->name, "token_embd.weight")) dense += t->nbytes;
    }
    if (hp->n_routed > 0) experts = experts * hp->top_k / hp->n_routed;
    return dense + experts;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *preset = "tiny", *synth_args = "", *isa = "auto";
    int prompt = 64, decode = 32, threads = 0, chunk = 0, defer = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--synth-args")) synth_args = v;
        else if (!strcmp(a, "--prompt")) prompt = atoi(v);
        else if (!strcmp(a, "--decode")) decode = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--isa")) isa = v;
        else if (!strcmp(a, "--chunk")) chunk = atoi(v);
        else if (!strcmp(a, "--defer")) defer = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (prompt < 1 || decode < 0) return 2;
    if (chunk <= 0 || chunk > prompt) chunk = prompt;
    char dir[] = "/tmp/tandem-bench-model-XXXXXX";
    int made = 0;
    if (!model_dir) {
        if (!mkdtemp(dir)) return 1;
        int st = make_synth(preset, 1, dir, synth_args);
        if (st) {
            fprintf(stderr, "bench_model: synth --preset %s failed (%d); see %s.log\n", preset, st,
                    dir);
            return st == -1 ? 77 : 1;
        }
        model_dir = dir;
        made = 1;
    }
    char err[ERR_LEN] = "";
    struct wt_model *w = NULL;
    struct ops *o = NULL;
    struct model *m = NULL;
    struct ops_params op = {.isa = isa, .n_threads = threads, .max_tokens = chunk};
    if (wt_open(model_dir, &w, err) || wt_validate(w, err) || tm_create(w, &op, &o, &m, err) ||
        model_set_defer(m, defer, err)) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    const struct wt_hparams *hp = wt_hparams(w);
    const int V = model_vocab(m), total = prompt + decode;
    struct tkv kv;
    if (tkv_init(&kv, model_n_layers(m), model_kv_dim(m), 2, total, 64)) return 1;
    int32_t *toks = malloc((size_t)total * sizeof *toks);
    float *lg = malloc((size_t)chunk * V * sizeof(float));
    if (!toks || !lg) return 1;
    for (int i = 0; i < total; i++) toks[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);

    /* warm-up: the prompt once in sequence slot 1 (scratch growth, page faults) */
    for (int p = 0; p < prompt; p += chunk) {
        int c = prompt - p < chunk ? prompt - p : chunk;
        if (run_seq_ex(m, &kv, 1, toks + p, c, p, 1, lg, err)) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
    }
    double t0 = now();
    for (int p = 0; p < prompt; p += chunk) {
        int c = prompt - p < chunk ? prompt - p : chunk;
        if (run_seq_ex(m, &kv, 0, toks + p, c, p, 1, lg, err)) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
    }
    double t_pre = now() - t0;
    t0 = now();
    for (int s = 0; s < decode; s++) {
        int32_t tok = argmax_fl(lg, V);
        if (run_seq(m, &kv, 0, &tok, 1, prompt + s, lg, err)) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
    }
    double t_dec = now() - t0;
    double bytes = decode_bytes(w), bw = read_bw();
    printf("model %s: %d layers, hidden %d, %d experts (top-%d), vocab %d; %s\n",
           made ? preset : model_dir, hp->n_layers, hp->hidden, hp->n_routed, hp->top_k, V,
           err[0] ? err : "");
    printf("threads %d, isa %s\n", threads, isa);
    printf("prefill: %d tokens (chunks of %d) in %.3f s = %.1f tokens/s\n", prompt, chunk, t_pre,
           prompt / t_pre);
    if (decode)
        printf("decode:  %d tokens in %.3f s = %.2f tokens/s (%.2f ms/token, context %d..%d)\n",
               decode, t_dec, decode / t_dec, t_dec * 1e3 / decode, prompt, total);
    printf("ceiling: %.1f MB of weights per decode token, single-thread read bandwidth %.1f GB/s "
           "-> %.0f tokens/s bandwidth bound (1 thread); measured/bound = %.2f\n",
           bytes / 1e6, bw, bw * 1e9 / bytes, decode ? (decode / t_dec) / (bw * 1e9 / bytes) : 0.0);
    free(toks);
    free(lg);
    tkv_free(&kv);
    tm_destroy(o, m);
    wt_close(w);
    if (made) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", dir, dir);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    }
    return 0;
}
