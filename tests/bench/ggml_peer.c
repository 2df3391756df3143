/* ggml_peer.c - ggml's CPU matmul on the shapes of `tandem bench cpu`, as the peer in the same run.
 *
 * Built against a fetched ggml source by scripts/build-ggml-peer.sh (never part of the meson
 * build). DeepSeek-V3 routed experts: gate and up [2048 x 7168], down [7168 x 2048]; a pool of E
 * experts filling --size-gb. Each case is one ggml graph of ggml_mul_mat nodes (weight of the
 * type, f32 activations; ggml quantizes them to the type's vec_dot type inside the op) run by
 * the CPU backend with --threads threads, best of --reps runs after one warm-up:
 *  - decode: every expert of the pool with 1 token (gate, up, down each): GB/s of weights read;
 *  - shared T: the same with T tokens on every expert: time as a multiple of the 1-token time;
 *  - prefill N: N tokens with top-8 routes spread evenly over 256 experts (N * 8 / 256 tokens
 *    on each, experts taken round-robin from the pool): TOP/s, 2 ops per MAC.
 * Only the matmuls are timed (no SiLU, routing or reduction). --extra NAME puts the weights in
 * the CPU backend's extra buffer type NAME (e.g. AMX, CPU_REPACK; --list shows them), which is
 * how llama.cpp reaches ggml's AMX and repacked kernels; without it plain ggml_mul_mat runs.
 * Usage: ggml_peer [--threads 16] [--types q4_K,q5_K,q6_K,q8_0,iq4_xs] [--prefill 512,2048]
 *                  [--shared 2,4,8,16] [--size-gb 1] [--reps 5] [--extra NAME] [--list]
 * An illegal instruction (the AMX path has died with SIGILL on the benchmark host) is reported
 * with its address and bytes on stderr before the exit (status 132), to name the instruction.
 */
#define _GNU_SOURCE
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

enum { HID = 7168, INTER = 2048, NEXP = 256, TOPK = 8 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 88172645463325252ull;
static float frand(void)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)(rs >> 40) / 8388608.0f - 1.0f;
}

struct pool {
    int n;
    struct ggml_tensor **gate, **up, **down;
    double bytes_per_expert;
};

/* one graph: for each of nslots experts (pool round-robin) gate and up on x [HID, T] and down on
 * h [INTER, T]; returns the best time of reps runs */
static double run_case(ggml_backend_t be, const struct pool *p, int nslots, int T, int reps)
{
    const int nodes = 3 * nslots + 2;
    struct ggml_init_params ip = {
        .mem_size = ggml_tensor_overhead() * (size_t)(nodes + 8) +
                    ggml_graph_overhead_custom((size_t)nodes + 16, false),
        .mem_buffer = NULL,
        .no_alloc = true,
    };
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, HID, T);
    struct ggml_tensor *h = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, INTER, T);
    struct ggml_cgraph *gf = ggml_new_graph_custom(ctx, (size_t)nodes + 16, false);
    for (int s = 0; s < nslots; s++) {
        int e = s % p->n;
        ggml_build_forward_expand(gf, ggml_mul_mat(ctx, p->gate[e], x));
        ggml_build_forward_expand(gf, ggml_mul_mat(ctx, p->up[e], x));
        ggml_build_forward_expand(gf, ggml_mul_mat(ctx, p->down[e], h));
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, be);
    if (!buf) {
        fprintf(stderr, "ggml_peer: out of memory for activations\n");
        exit(1);
    }
    float *v = malloc(sizeof(float) * (size_t)HID * T);
    for (size_t i = 0; i < (size_t)HID * T; i++) v[i] = frand();
    ggml_backend_tensor_set(x, v, 0, ggml_nbytes(x));
    ggml_backend_tensor_set(h, v, 0, ggml_nbytes(h));
    free(v);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        if (ggml_backend_graph_compute(be, gf) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "ggml_peer: graph compute failed\n");
            exit(1);
        }
        double t = now() - t0;
        if (r > 0 && t < best) best = t; /* run 0 is the warm-up */
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return best;
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

static ggml_backend_buffer_type_t find_extra(ggml_backend_dev_t dev, const char *name, int list)
{
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t get =
        (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
            reg, "ggml_backend_dev_get_extra_bufts");
    if (!get) return NULL;
    for (ggml_backend_buffer_type_t *b = get(dev); b && *b; b++) {
        if (list) printf("extra buffer type: %s\n", ggml_backend_buft_name(*b));
        if (name && strcmp(ggml_backend_buft_name(*b), name) == 0) return *b;
    }
    return NULL;
}

/* SIGILL: "ggml_peer: SIGILL at 0x... : 16 bytes" with write(2) only, then exit 132. Built for
 * plain x86-64 and installed by a constructor, so it also reports an instruction the CPU lacks
 * in code that runs before main or in main's own prologue (the binary is -march=sapphirerapids). */
#define PLAIN_X86 __attribute__((target("arch=x86-64")))
PLAIN_X86 static void on_sigill(int sig, siginfo_t *si, void *ctx)
{
    static const char hex[] = "0123456789abcdef";
    const ucontext_t *uc = ctx;
    const unsigned char *pc = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    char b[128] = "ggml_peer: SIGILL at 0x";
    int n = 23;
    for (int i = 60; i >= 0; i -= 4) b[n++] = hex[((uintptr_t)pc >> i) & 15];
    b[n++] = ':';
    for (int i = 0; i < 16; i++) {
        b[n++] = ' ';
        b[n++] = hex[pc[i] >> 4];
        b[n++] = hex[pc[i] & 15];
    }
    b[n++] = '\n';
    if (write(2, b, (size_t)n) < 0) _exit(132);
    (void)sig;
    (void)si;
    _exit(132);
}

PLAIN_X86 __attribute__((constructor(101))) static void install_sigill(void)
{
    static struct sigaction sa; /* zero: no vector stores to clear it */
    sa.sa_sigaction = on_sigill;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGILL, &sa, NULL);
}

int main(int argc, char **argv)
{
    int threads = 16, reps = 5, list = 0;
    double size_gb = 1.0;
    const char *types = "q4_K,q5_K,q6_K,q8_0,iq4_xs", *extra = NULL;
    int prefill[8], nprefill = parse_list("512,2048", prefill, 8);
    int shared[8], nshared = parse_list("2,4,8,16", shared, 8);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--size-gb") && v) size_gb = atof(argv[++i]);
        else if (!strcmp(a, "--types") && v) types = argv[++i];
        else if (!strcmp(a, "--prefill") && v) nprefill = parse_list(argv[++i], prefill, 8);
        else if (!strcmp(a, "--shared") && v) nshared = parse_list(argv[++i], shared, 8);
        else if (!strcmp(a, "--extra") && v) extra = argv[++i];
        else if (!strcmp(a, "--list")) list = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--threads N] [--types LIST] [--prefill LIST] [--shared LIST]"
                    " [--size-gb G] [--reps N] [--extra NAME] [--list]\n",
                    argv[0]);
            return 2;
        }
    }
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, threads);
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_buffer_type_t buft = ggml_backend_cpu_buffer_type();
    ggml_backend_buffer_type_t xb = find_extra(dev, extra, list);
    if (list) return 0;
    if (extra && !xb) {
        fprintf(stderr, "ggml_peer: no extra buffer type %s (--list)\n", extra);
        return 1;
    }
    if (xb) buft = xb;
    printf("ggml peer: %d threads, weights in %s, pool %.2f GB\n", threads,
           ggml_backend_buft_name(buft), size_gb);

    char tl[256];
    snprintf(tl, sizeof tl, "%s", types);
    for (char *tn = strtok(tl, ","); tn; tn = strtok(NULL, ",")) {
        enum ggml_type type = GGML_TYPE_COUNT;
        for (int t = 0; t < GGML_TYPE_COUNT; t++) {
            const char *nm = ggml_type_name((enum ggml_type)t);
            if (nm && !strcasecmp(nm, tn)) type = (enum ggml_type)t;
        }
        if (type == GGML_TYPE_COUNT) {
            fprintf(stderr, "ggml_peer: unknown type %s\n", tn);
            return 1;
        }
        struct pool p;
        p.bytes_per_expert =
            2.0 * ggml_row_size(type, HID) * INTER + ggml_row_size(type, INTER) * HID;
        p.n = (int)(size_gb * 1e9 / p.bytes_per_expert);
        if (p.n < TOPK) p.n = TOPK;
        p.gate = calloc(p.n, sizeof *p.gate);
        p.up = calloc(p.n, sizeof *p.up);
        p.down = calloc(p.n, sizeof *p.down);
        struct ggml_init_params ip = {ggml_tensor_overhead() * (size_t)(3 * p.n + 4), NULL, true};
        struct ggml_context *wctx = ggml_init(ip);
        for (int e = 0; e < p.n; e++) {
            p.gate[e] = ggml_new_tensor_2d(wctx, type, HID, INTER);
            p.up[e] = ggml_new_tensor_2d(wctx, type, HID, INTER);
            p.down[e] = ggml_new_tensor_2d(wctx, type, INTER, HID);
        }
        ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft);
        if (!wbuf) {
            fprintf(stderr, "ggml_peer: cannot allocate %d experts of %s\n", p.n, tn);
            return 1;
        }
        ggml_backend_buffer_set_usage(wbuf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        /* one quantized matrix of each shape, copied to every expert (the values do not matter) */
        size_t nw = (size_t)HID * INTER;
        float *f = malloc(sizeof(float) * nw);
        for (size_t i = 0; i < nw; i++) f[i] = frand() * 0.05f;
        void *qa = malloc(ggml_row_size(type, HID) * INTER),
             *qb = malloc(ggml_row_size(type, INTER) * HID);
        ggml_quantize_chunk(type, f, qa, 0, INTER, HID, NULL);
        ggml_quantize_chunk(type, f, qb, 0, HID, INTER, NULL);
        free(f);
        for (int e = 0; e < p.n; e++) {
            ggml_backend_tensor_set(p.gate[e], qa, 0, ggml_nbytes(p.gate[e]));
            ggml_backend_tensor_set(p.up[e], qa, 0, ggml_nbytes(p.up[e]));
            ggml_backend_tensor_set(p.down[e], qb, 0, ggml_nbytes(p.down[e]));
        }
        free(qa), free(qb);

        double t1 = run_case(be, &p, p.n, 1, reps);
        printf("%-7s decode 1 tok x %d experts: %.3f ms/expert, %.1f GB/s\n", tn, p.n,
               t1 * 1e3 / p.n, p.bytes_per_expert * p.n / t1 / 1e9);
        for (int i = 0; i < nshared; i++) {
            double t = run_case(be, &p, p.n, shared[i], reps);
            printf("%-7s shared %d tok: %.2f x 1-tok\n", tn, shared[i], t / t1);
        }
        for (int i = 0; i < nprefill; i++) {
            int per = prefill[i] * TOPK / NEXP;
            if (per < 1) continue;
            double t = run_case(be, &p, NEXP, per, reps > 2 ? 2 : reps);
            double ops = 2.0 * per * NEXP * 3.0 * HID * INTER;
            printf("%-7s prefill %d tok (%d per expert x %d experts): %.1f ms, %.2f TOP/s\n", tn,
                   prefill[i], per, NEXP, t * 1e3, ops / t / 1e12);
        }
        fflush(stdout);
        ggml_backend_buffer_free(wbuf);
        ggml_free(wctx);
        free(p.gate), free(p.up), free(p.down);
    }
    ggml_backend_free(be);
    return 0;
}
