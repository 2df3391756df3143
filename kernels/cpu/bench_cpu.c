/* bench_cpu.c - `tandem bench cpu`: how close the CPU expert kernels come to the machine's DRAM.
 *
 * 1. DRAM read bandwidth: every thread of the pool sums its share of a buffer of --size-gb GiB
 *    (default 2, far above any L3), best of a few passes with and without software prefetch
 *    (the kernels prefetch; without it the test read ~10% less on the Xeon). This is the
 *    ceiling for decode.
 * 2. Per weight type, DeepSeek-V3 expert shapes (gate/up 2048x7168, down 7168x2048) with enough
 *    experts that the weights exceed --size-gb (so caches cannot help), through cpuq_moe_forward
 *    (quantization, pool, reduction included):
 *    - decode, 1 token x 8 experts; experts advance round-robin each call, so an expert is
 *      reused only after every other expert has been read (a reuse distance of the whole set);
 *    - shared: T tokens all routed to the same 8 experts (T = 8..64): time relative to 1 token
 *      (the target is <= 1.3x at T = 8: batched decode should stay bandwidth-bound);
 *    - spread: T tokens with random top-8 routes over 64 experts (realistic batched decode);
 *    reported as GB/s of expert weights read and the ratio to the measured DRAM bandwidth;
 *    - prefill: N tokens (512; --prefill 512,4096) with random top-8 routes over 256 experts,
 *      reported as TOP/s (2 ops per multiply-add). Prefill is compute-bound, so its experts may
 *      share weight buffers (expert e uses buffer e mod the allocated count) to bound memory.
 * Weight contents: a few real rows quantized with the type's quantizer, tiled over the buffers
 * (timing does not depend on the values; tiling keeps set-up fast).
 * Threads: the owner thread drives a pool of --threads participants.
 */
#include "kernels/cpu/bench_cpu.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/wpool.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HIDDEN 7168
#define INTER 2048
#define TOP_K 8

struct bopts {
    int threads, isa, quick, pin;
    double size_gb;
    int types[8], n_types;
    int prefill[4], n_prefill;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

/* ---- DRAM read bandwidth */

struct rd_ctx {
    const uint64_t *buf;
    int64_t words_per_item;
    int prefetch;   /* software prefetch 4 KB ahead, like the kernels */
    uint64_t *sums; /* one per item, so the reads cannot be optimized away */
};

static void job_read(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct rd_ctx *c = arg;
    (void)thread_idx;
    for (int64_t it = b; it < e; it++) {
        const uint64_t *p = c->buf + it * c->words_per_item;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (int64_t i = 0; i < c->words_per_item; i += 8) {
            if (c->prefetch) __builtin_prefetch(p + i + 512);
            s0 += p[i];
            s1 += p[i + 1];
            s2 += p[i + 2];
            s3 += p[i + 3];
            s4 += p[i + 4];
            s5 += p[i + 5];
            s6 += p[i + 6];
            s7 += p[i + 7];
        }
        c->sums[it] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    }
}

struct fill_ctx {
    char *dst;
    const char *tile;
    size_t tile_bytes, item_bytes, total;
};

/* first touch by the pool threads (pages land near the threads that read them) */
static void job_fill(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct fill_ctx *c = arg;
    (void)thread_idx;
    for (int64_t it = b; it < e; it++) {
        size_t off = (size_t)it * c->item_bytes, end = off + c->item_bytes;
        if (end > c->total) end = c->total;
        for (size_t o = off; o < end;) {
            size_t to = o % c->tile_bytes, n = c->tile_bytes - to;
            if (n > end - o) n = end - o;
            memcpy(c->dst + o, c->tile + to, n);
            o += n;
        }
    }
}

static void fill(struct wpool *p, char *dst, size_t total, const char *tile, size_t tile_bytes)
{
    struct fill_ctx c = {dst, tile, tile_bytes, 1 << 22, total};
    wpool_run(p, job_fill, &c, (int64_t)((total + c.item_bytes - 1) / c.item_bytes), 1);
}

/* best GB/s of plain streaming (out[0]) and with software prefetch (out[1]) */
static int dram_read_gbs(struct wpool *p, double size_gb, int passes, double out[2])
{
    size_t bytes = (size_t)(size_gb * (1 << 30)) & ~(size_t)((1 << 22) - 1);
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, bytes) != 0) return -1;
    out[0] = out[1] = 0;
    char tile[4096];
    for (int i = 0; i < 4096; i++) tile[i] = (char)rnd();
    fill(p, (char *)buf, bytes, tile, sizeof tile);
    int64_t items = (int64_t)(bytes >> 22);
    struct rd_ctx c = {buf, (1 << 22) / 8, 0, calloc((size_t)items, 8)};
    for (int i = 0; i < 2 * passes; i++) {
        c.prefetch = i & 1;
        double t0 = now_s();
        wpool_run(p, job_read, &c, items, 1);
        double gbs = (double)bytes / (now_s() - t0) / 1e9;
        if (gbs > out[c.prefetch]) out[c.prefetch] = gbs;
    }
    free(c.sums);
    free(buf);
    return 0;
}

/* ---- expert weights */

struct experts {
    int n, n_buf;
    int type;
    size_t bytes_one; /* gate + up + down of one expert */
    char *mem;
    struct cpuq_mat *gate, *up, *down;
};

static void experts_free(struct experts *x)
{
    free(x->mem);
    free(x->gate);
    free(x->up);
    free(x->down);
    memset(x, 0, sizeof *x);
}

/* n experts whose weights live in n_buf distinct buffers */
static int experts_make(struct wpool *p, const struct cpuq_ops *o, int type, int n, int n_buf,
                        struct experts *x, char *err)
{
    memset(x, 0, sizeof *x);
    size_t rb_h = cpuq_row_size(type, HIDDEN), rb_i = cpuq_row_size(type, INTER);
    if (!rb_h || !rb_i || !o->type[type].from_float)
        return err_set(err, ERR_UNSUPPORTED, "bench: type %s unsupported", qtype_name(type));
    size_t gsz = rb_h * INTER, dsz = rb_i * HIDDEN;
    x->n = n;
    x->n_buf = n_buf;
    x->type = type;
    x->bytes_one = 2 * gsz + dsz;
    x->mem = NULL;
    if (posix_memalign((void **)&x->mem, 4096, x->bytes_one * (size_t)n_buf) != 0)
        return err_set(err, ERR_NOMEM, "bench: cannot allocate %.1f GB of weights",
                       (double)x->bytes_one * n_buf / 1e9);
    x->gate = calloc((size_t)n, sizeof *x->gate);
    x->up = calloc((size_t)n, sizeof *x->up);
    x->down = calloc((size_t)n, sizeof *x->down);
    if (!x->gate || !x->up || !x->down) {
        experts_free(x);
        return err_set(err, ERR_NOMEM, "bench: out of memory");
    }
    /* a tile of 16 real rows of each shape; the layout [gate | up | down] per expert means tiling
     * rows of HIDDEN-row bytes over gate/up and INTER-row bytes over down */
    enum { TR = 16 };
    float *f = malloc(sizeof(float) * HIDDEN * TR);
    char *tg = malloc(rb_h * TR), *td = malloc(rb_i * TR);
    for (int i = 0; i < HIDDEN * TR; i++) f[i] = ((float)rnd() / 4294967296.0f - 0.5f) * 0.1f;
    cpuq_quantize_rows(o, type, f, tg, TR, HIDDEN);
    cpuq_quantize_rows(o, type, f, td, TR, INTER);
    for (int b = 0; b < n_buf; b++) {
        char *e = x->mem + (size_t)b * x->bytes_one;
        fill(p, e, 2 * gsz, tg, rb_h * TR);
        fill(p, e + 2 * gsz, dsz, td, rb_i * TR);
    }
    free(f);
    free(tg);
    free(td);
    for (int i = 0; i < n; i++) {
        char *e = x->mem + (size_t)(i % n_buf) * x->bytes_one;
        x->gate[i] = (struct cpuq_mat){type, INTER, HIDDEN, e, rb_h, NULL};
        x->up[i] = (struct cpuq_mat){type, INTER, HIDDEN, e + gsz, rb_h, NULL};
        x->down[i] = (struct cpuq_mat){type, HIDDEN, INTER, e + 2 * gsz, rb_i, NULL};
    }
    return 0;
}

/* one timed call: seconds */
static double moe_call(struct wpool *p, const struct cpuq_ops *o, struct experts *x, int n_tok,
                       const float *xin, const int32_t *ids, const float *w, float *out,
                       struct cpuq_moe_scratch *s, char *err, int *rc)
{
    double t0 = now_s();
    *rc = cpuq_moe_forward(p, o, x->gate, x->up, x->down, x->n, n_tok, HIDDEN, xin, TOP_K, ids, w,
                           out, 0, s, err);
    return now_s() - t0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: tandem bench cpu [--threads N] [--isa auto|amx|avx512|avx2|scalar]\n"
            "                        [--size-gb G] [--types q4_K,q6_K,q8_0] [--prefill 512,4096]\n"
            "                        [--no-pin] [--quick]\n"
            "  --threads   pool participants (default: every CPU this process may use)\n"
            "  --size-gb   DRAM test buffer and minimum expert weight set (default 2)\n"
            "  --prefill   prefill token counts, 0 to skip (default 512)\n"
            "  --quick     fewer repetitions (a couple of minutes on 16 cores)\n");
    return 2;
}

static int parse_list(const char *s, int *out, int max, int types)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) return -1;
        int v;
        if (types) {
            v = qtype_from_name(tok);
        } else {
            char *end;
            v = (int)strtol(tok, &end, 10);
            if (*end || v < 0 || v > 65536) v = -1;
        }
        if (v < 0) return -1;
        out[n++] = v;
    }
    return n;
}

int cpuq_bench_cpu(int argc, char **argv)
{
    struct bopts b = {.threads = 0,
                      .isa = cpuq_isa_detect(),
                      .size_gb = 2.0,
                      .pin = 1,
                      .types = {QTYPE_Q4_K, QTYPE_Q6_K, QTYPE_Q8_0},
                      .n_types = 3,
                      .prefill = {512},
                      .n_prefill = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            b.quick = 1;
        } else if (strcmp(a, "--no-pin") == 0) {
            b.pin = 0;
        } else if (strcmp(a, "--threads") == 0 && v) {
            b.threads = atoi(v);
            i++;
        } else if (strcmp(a, "--isa") == 0 && v) {
            b.isa = cpuq_isa_parse(v);
            if (b.isa < 0) return usage();
            i++;
        } else if (strcmp(a, "--size-gb") == 0 && v) {
            b.size_gb = atof(v);
            if (!(b.size_gb >= 0.01 && b.size_gb <= 1024)) return usage();
            i++;
        } else if (strcmp(a, "--types") == 0 && v) {
            if ((b.n_types = parse_list(v, b.types, 8, 1)) <= 0) return usage();
            i++;
        } else if (strcmp(a, "--prefill") == 0 && v) {
            if ((b.n_prefill = parse_list(v, b.prefill, 4, 0)) < 0) return usage();
            i++;
        } else {
            return usage();
        }
    }
    char err[ERR_LEN] = "";
    setvbuf(stdout, NULL, _IOLBF, 0); /* rows appear as they are measured, also into a file */
    const struct cpuq_ops *o;
    if (cpuq_ops_get(b.isa, &o, err) != 0) {
        fprintf(stderr, "bench cpu: %s\n", err);
        return 1;
    }
    struct wpool *p;
    if (wpool_create(b.threads, b.pin, 200, &p, err) != 0) {
        fprintf(stderr, "bench cpu: %s\n", err);
        return 1;
    }
    struct cpuq_moe_scratch *s;
    if (cpuq_moe_scratch_create(&s, err) != 0) {
        fprintf(stderr, "bench cpu: %s\n", err);
        wpool_destroy(p);
        return 1;
    }
    int nth = wpool_n_threads(p);
    printf("tandem bench cpu: isa %s, %d threads%s, weights >= %.2f GiB per type%s\n", o->isa_name,
           nth, b.pin ? " (pinned)" : "", b.size_gb, b.quick ? ", quick" : "");

    double bws[2];
    if (dram_read_gbs(p, b.size_gb, b.quick ? 3 : 5, bws) != 0) {
        fprintf(stderr, "bench cpu: cannot allocate the DRAM test buffer\n");
        return 1;
    }
    double bw = bws[0] > bws[1] ? bws[0] : bws[1];
    printf("\nDRAM read bandwidth (%d threads, %.2f GiB streaming sum): %.1f GB/s plain, %.1f GB/s "
           "with software prefetch; ceiling = %.1f GB/s\n",
           nth, b.size_gb, bws[0], bws[1], bw);
    fflush(stdout); /* a caller reading only the ceiling (a pipe) gets it now */

    int max_tok = 4096;
    for (int i = 0; i < b.n_prefill; i++)
        if (b.prefill[i] > max_tok) max_tok = b.prefill[i];
    float *xin = malloc(sizeof(float) * (size_t)max_tok * HIDDEN);
    float *out = malloc(sizeof(float) * (size_t)max_tok * HIDDEN);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_tok * TOP_K);
    float *w = malloc(sizeof(float) * (size_t)max_tok * TOP_K);
    if (!xin || !out || !ids || !w) {
        fprintf(stderr, "bench cpu: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)max_tok * HIDDEN; i++)
        xin[i] = (float)rnd() / 4294967296.0f - 0.5f;
    for (int i = 0; i < max_tok * TOP_K; i++) w[i] = 0.3f;

    int rc = 0;
    for (int ti = 0; ti < b.n_types && rc == 0; ti++) {
        int type = b.types[ti];
        size_t one = 2 * cpuq_row_size(type, HIDDEN) * INTER + cpuq_row_size(type, INTER) * HIDDEN;
        if (!one || !o->type[type].vec_dot) {
            printf("\n%s: no dot product, skipped\n", qtype_name(type));
            continue;
        }
        int n = (int)((b.size_gb * (1 << 30)) / (double)one) + 1;
        if (n < 64) n = 64;
        n = (n + 7) / 8 * 8;
        struct experts x;
        if ((rc = experts_make(p, o, type, n, n, &x, err)) != 0) break;
        printf("\n%s: %d experts, %.1f MB each, %.2f GB in all\n", qtype_name(type), n,
               (double)one / 1e6, (double)one * n / 1e9);
        printf("  %-34s %10s %9s %9s %8s\n", "case", "ms/call", "GB/s", "of DRAM", "x 1-tok");

        /* decode: 1 token x 8 experts, round-robin over all experts */
        int reps = b.quick ? n / 8 : 2 * n / 8;
        if (reps < 8) reps = 8;
        double t1 = 0, best1 = 1e9;
        for (int r = 0; r < reps + 2 && rc == 0; r++) {
            for (int k = 0; k < TOP_K; k++) ids[k] = (int32_t)((r * TOP_K + k) % n);
            double t = moe_call(p, o, &x, 1, xin, ids, w, out, s, err, &rc);
            if (r >= 2) t1 += t; /* two warm-up calls */
            if (t < best1) best1 = t;
        }
        t1 /= reps;
        double gb1 = 8.0 * (double)one / t1 / 1e9;
        printf("  %-34s %10.3f %9.1f %8.0f%% %8s\n", "decode 1 tok x 8 experts", t1 * 1e3, gb1,
               100 * gb1 / bw, "1.00");

        /* shared: T tokens on the same 8 experts */
        int shared_t[] = {8, 16, 32, 64};
        for (int si = 0; si < 4 && rc == 0; si++) {
            int T = shared_t[si];
            double tt = 0;
            int sreps = b.quick ? 8 : 16;
            for (int r = 0; r < sreps + 1 && rc == 0; r++) {
                for (int t = 0; t < T; t++)
                    for (int k = 0; k < TOP_K; k++)
                        ids[t * TOP_K + k] = (int32_t)((r * TOP_K + k) % n);
                double t = moe_call(p, o, &x, T, xin, ids, w, out, s, err, &rc);
                if (r >= 1) tt += t;
            }
            tt /= sreps;
            double gb = 8.0 * (double)one / tt / 1e9;
            char name[64];
            snprintf(name, sizeof name, "shared: %d tok x same 8 experts", T);
            printf("  %-34s %10.3f %9.1f %8.0f%% %8.2f\n", name, tt * 1e3, gb, 100 * gb / bw,
                   tt / t1);
        }

        /* spread: T tokens, random top-8 over 64 experts (a window that moves each call) */
        int spread_t[] = {8, 16, 32, 64};
        for (int si = 0; si < 4 && rc == 0; si++) {
            int T = spread_t[si];
            double tt = 0, bytes = 0;
            int sreps = b.quick ? 6 : 12;
            for (int r = 0; r < sreps + 1 && rc == 0; r++) {
                int base = (r * 64) % n;
                char used[64] = {0};
                for (int t = 0; t < T; t++) {
                    /* 8 distinct experts of the window per token */
                    int pick[TOP_K];
                    for (int k = 0; k < TOP_K; k++) {
                        int e, dup;
                        do {
                            e = (int)(rnd() % 64);
                            dup = 0;
                            for (int j = 0; j < k; j++) dup |= pick[j] == e;
                        } while (dup);
                        pick[k] = e;
                        used[e] = 1;
                        ids[t * TOP_K + k] = (int32_t)((base + e) % n);
                    }
                }
                double t = moe_call(p, o, &x, T, xin, ids, w, out, s, err, &rc);
                if (r >= 1) {
                    tt += t;
                    int na = 0;
                    for (int e = 0; e < 64; e++) na += used[e];
                    bytes += (double)na * (double)one;
                }
            }
            double gb = bytes / tt / 1e9;
            char name[64];
            snprintf(name, sizeof name, "spread: %d tok, top-8 of 64", T);
            printf("  %-34s %10.3f %9.1f %8.0f%% %8.2f\n", name, tt / sreps * 1e3, gb,
                   100 * gb / bw, tt / sreps / t1);
        }
        experts_free(&x);

        /* prefill: N tokens over 256 experts */
        for (int pi = 0; pi < b.n_prefill && rc == 0; pi++) {
            int N = b.prefill[pi];
            if (N <= 0) continue;
            int nbuf = (int)((b.size_gb * (1 << 30)) / (double)one);
            if (nbuf < 8) nbuf = 8;
            if (nbuf > 256) nbuf = 256;
            if ((rc = experts_make(p, o, type, 256, nbuf, &x, err)) != 0) break;
            for (int t = 0; t < N; t++)
                for (int k = 0; k < TOP_K; k++) {
                    int e, dup;
                    do {
                        e = (int)(rnd() % 256);
                        dup = 0;
                        for (int j = 0; j < k; j++) dup |= ids[t * TOP_K + j] == e;
                    } while (dup);
                    ids[t * TOP_K + k] = e;
                }
            int preps = b.quick || N > 1024 ? 2 : 3; /* the first call also grows the scratch */
            double best = 1e9;
            for (int r = 0; r < preps && rc == 0; r++) { /* best of the calls */
                double t = moe_call(p, o, &x, N, xin, ids, w, out, s, err, &rc);
                if (t < best) best = t;
            }
            double ops = 2.0 * N * TOP_K * 3.0 * HIDDEN * INTER;
            char name[64];
            snprintf(name, sizeof name, "prefill %d tok, top-8 of 256", N);
            printf("  %-34s %10.1f %8.2f TOP/s (%d weight buffers)\n", name, best * 1e3,
                   ops / best / 1e12, nbuf);
            experts_free(&x);
        }
    }
    if (rc != 0) fprintf(stderr, "bench cpu: %s\n", err);
    printf("\nceiling: DRAM read %.1f GB/s; targets: decode >= 95%% of it, 8 shared tokens <= "
           "1.3x one token, AMX prefill >= 20 TOP/s\n",
           bw);
    free(xin);
    free(out);
    free(ids);
    free(w);
    cpuq_moe_scratch_destroy(s);
    wpool_destroy(p);
    return rc ? 1 : 0;
}
