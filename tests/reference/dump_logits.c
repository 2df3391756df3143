/* dump_logits.c - run tandem's CPU forward (or the float64 reference) on given token ids and
 * write every position's logits as raw little-endian f32 [n, vocab], for hf_compare.py.
 *
 *   dump_logits --model DIR --ids FILE --out FILE [--ref | --ref-exact] [--chunk N]
 *               [--threads N] [--isa X]
 *   dump_logits --model DIR --make-ids N [--seed S] --ids FILE ...   (write N random ids first)
 *
 * The ids file holds whitespace-separated integers. The fast path runs the prompt as chunked
 * prefill of --chunk tokens per forward (default: all at once); --ref runs the float64
 * reference of tests/engine/ref_model.c instead (with tandem's quantization points emulated; it
 * follows its own roundings, so over many positions it drifts chaotically from the fast path, see
 * docs/numerics.md), --ref-exact the same reference without any quantization (what HF in float32
 * computes; --ref-skip MASK leaves out only some roundings, see ref_set_exact). --w8a16 runs the
 * fast path with unquantized FP8 activations (ops_params.fp8_w8a16), --kv f32 with an f32
 * latent cache (engine.kv_cache_type; default bf16); --routes FILE also writes the fast path's
 * routed-expert choices, one line per (position, MoE layer): `pos layer e1 .. ek`, ascending (for
 * hf_compare.py's routing report). --placement hybrid runs
 * the fast path on the GPU backend (gpu.placement; needs a CUDA build and device), --fp8-gemm
 * cublaslt its cuBLASLt prefill linears. Exit 0 on success, 1 on error, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/weights/weights.h"
#include "tests/engine/model_util.h"
#include "tests/engine/ref_model.h"

/* --routes: the route hook's choices; positions follow each layer's token count, so passes and
 * chunks (one sequence, in order) need no bookkeeping */
struct routes_out {
    FILE *f;
    int seen[256];
};

static void on_route(void *ud, int layer, int n, const int32_t *ids, int top_k)
{
    struct routes_out *r = ud;
    if (layer < 0 || layer >= 256) return;
    for (int t = 0; t < n; t++) {
        int32_t e[64];
        int k = top_k < 64 ? top_k : 64;
        memcpy(e, ids + (size_t)t * top_k, (size_t)k * sizeof(int32_t));
        for (int i = 1; i < k; i++) /* insertion sort: k <= 64 */
            for (int j = i; j > 0 && e[j - 1] > e[j]; j--) {
                int32_t x = e[j];
                e[j] = e[j - 1];
                e[j - 1] = x;
            }
        fprintf(r->f, "%d %d", r->seen[layer]++, layer);
        for (int i = 0; i < k; i++) fprintf(r->f, " %d", (int)e[i]);
        fputc('\n', r->f);
    }
}

static int usage(void)
{
    fprintf(
        stderr,
        "usage: dump_logits --model DIR --ids FILE --out FILE [--ref|--ref-exact] [--chunk N] "
        "[--threads N] [--isa NAME] [--w8a16] [--kv bf16|f32] [--routes FILE] [--ref-skip MASK] "
        "[--make-ids N [--seed S]] [--placement cpu|hybrid] [--fp8-gemm exact|cublaslt]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *ids_path = NULL, *out_path = NULL, *isa = "auto";
    const char *placement = "cpu", *fp8_gemm = NULL, *routes_path = NULL;
    int use_ref = 0, chunk = 0, threads = 0, make = 0, exact = 0, w8a16 = 0;
    int kv_type = MODEL_KV_BF16;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ref")) {
            use_ref = 1;
            continue;
        }
        if (!strcmp(a, "--ref-exact")) {
            use_ref = 2;
            exact = 7;
            continue;
        }
        if (!strcmp(a, "--w8a16")) {
            w8a16 = 1;
            continue;
        }
        if (!v) return usage();
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--ids")) ids_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--chunk")) chunk = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--isa")) isa = v;
        else if (!strcmp(a, "--placement")) placement = v;
        else if (!strcmp(a, "--fp8-gemm")) fp8_gemm = v;
        else if (!strcmp(a, "--make-ids")) make = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--ref-skip")) {
            use_ref = 2;
            exact = atoi(v);
        } else if (!strcmp(a, "--routes")) routes_path = v;
        else if (!strcmp(a, "--kv") && !strcmp(v, "f32")) kv_type = MODEL_KV_F32;
        else if (!strcmp(a, "--kv") && !strcmp(v, "bf16")) kv_type = MODEL_KV_BF16;
        else return usage();
        i++;
    }
    if (!model_dir || !ids_path || (!out_path && !make)) return usage();

    char err[ERR_LEN] = "";
    struct wt_model *w = NULL;
    if (wt_open(model_dir, &w, err) || wt_validate(w, err)) {
        fprintf(stderr, "dump_logits: %s\n", err);
        return 1;
    }
    const int V = wt_hparams(w)->vocab_size;
    if (make > 0) {
        FILE *f = fopen(ids_path, "w");
        if (!f) {
            perror(ids_path);
            return 1;
        }
        unsigned long long s = seed * 2862933555777941757ull + 3037000493ull;
        for (int i = 0; i < make; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            fprintf(f, "%d%c", (int)((s >> 33) % (unsigned long long)V), i % 16 == 15 ? '\n' : ' ');
        }
        fclose(f);
        if (!out_path) return 0;
    }
    FILE *f = fopen(ids_path, "r");
    if (!f) {
        perror(ids_path);
        return 1;
    }
    int n = 0, cap = 256;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int v;
    while (ids && fscanf(f, "%d", &v) == 1) {
        if (n == cap) ids = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
        if (ids) ids[n++] = v;
    }
    fclose(f);
    if (!ids || n == 0) {
        fprintf(stderr, "dump_logits: no ids in %s\n", ids_path);
        return 1;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            fprintf(stderr, "dump_logits: id %d out of range (vocab %d)\n", ids[i], V);
            return 1;
        }
    float *lg = malloc((size_t)n * V * sizeof(float));
    if (!lg) {
        fprintf(stderr, "dump_logits: out of memory\n");
        return 1;
    }

    int rc;
    if (use_ref) {
        struct ref_model *r = NULL;
        double *row = malloc((size_t)V * sizeof(double));
        rc = row ? ref_create(w, n, &r, err) : ERR_NOMEM;
        if (!rc) ref_set_exact(r, exact);
        for (int i = 0; !rc && i < n; i++) {
            rc = ref_step(r, ids[i], row, err);
            for (int j = 0; !rc && j < V; j++) lg[(size_t)i * V + j] = (float)row[j];
        }
        ref_destroy(r);
        free(row);
    } else {
        if (chunk <= 0 || chunk > n) chunk = n;
        struct ops *o = NULL;
        struct model *m = NULL;
        struct ops_params op = {
            .isa = isa, .n_threads = threads, .max_tokens = chunk, .fp8_w8a16 = w8a16};
        struct tkv kv;
        rc = ops_params_parse(&op, placement, fp8_gemm, err);
        if (!rc) rc = tm_create(w, &op, &o, &m, err);
        if (!rc && tkv_init_type(&kv, model_n_layers(m), model_kv_dim(m), 1, n, 16, kv_type))
            rc = err_set(err, ERR_NOMEM, "out of memory for the KV cache");
        struct routes_out ro = {0};
        if (!rc && routes_path) {
            if (!(ro.f = fopen(routes_path, "w")))
                rc = err_set(err, ERR_IO, "%s: cannot write", routes_path);
            else model_set_route_hook(m, on_route, &ro);
        }
        for (int p = 0; !rc && p < n; p += chunk) {
            int c = n - p < chunk ? n - p : chunk;
            rc = run_seq(m, &kv, 0, ids + p, c, p, lg + (size_t)p * V, err);
        }
        if (ro.f && fclose(ro.f) != 0 && !rc)
            rc = err_set(err, ERR_IO, "%s: write failed", routes_path);
        if (m) tkv_free(&kv);
        tm_destroy(o, m);
    }
    if (rc) {
        fprintf(stderr, "dump_logits: %s\n", err);
        return 1;
    }
    FILE *o = fopen(out_path, "wb");
    if (!o || fwrite(lg, sizeof(float), (size_t)n * V, o) != (size_t)n * V || fclose(o)) {
        perror(out_path);
        return 1;
    }
    fprintf(stderr, "dump_logits: %d positions x %d logits -> %s (%s%s%s)\n", n, V, out_path,
            use_ref == 2 ? "float64 reference, exact (no quantization)"
            : use_ref    ? "float64 reference"
                         : "tandem forward, placement ",
            use_ref ? "" : placement,
            use_ref                   ? ""
            : kv_type == MODEL_KV_F32 ? ", f32 cache"
                                      : "");
    free(lg);
    free(ids);
    wt_close(w);
    return 0;
}
