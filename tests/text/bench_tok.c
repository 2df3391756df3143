/* bench_tok.c - tokenizer throughput on one core: encode and decode MB/s of a text file.
 *
 * usage: bench_tok MODEL_DIR TEXT_FILE [REPEATS]
 * Prints one JSON line: {"bytes":..., "tokens":..., "encode_mb_s":..., "decode_mb_s":...,
 * "encode_special_mb_s":..., "docs_mb_s":...}. The text is encoded as one string (a long
 * prompt; "tokens" counts that encoding with added tokens matched), and as separate documents
 * (the file's NUL-separated parts, "docs_mb_s", added tokens matched); best of REPEATS runs
 * (default 5). Load time is reported separately ("load_ms"). Times are thread CPU time.
 */
#include "../../common/err.h"
#include "../../engine/text/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this thread: "MB/s on one core" stays meaningful on a loaded machine */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tok MODEL_DIR TEXT_FILE [REPEATS]\n");
        return 2;
    }
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    char err[ERR_LEN] = "";
    double t0 = now();
    struct tok *t;
    if (tok_load(&t, argv[1], err)) {
        fprintf(stderr, "bench_tok: %s\n", err);
        return 1;
    }
    double load = now() - t0;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) return 1;
    fclose(f);
    struct tok_ids ids = {0};
    struct sbuf s = {0};
    double best_enc = 1e30, best_dec = 1e30, best_sp = 1e30, best_docs = 1e30;
    /* the file may hold NUL-separated documents: encoded as one text, NULs are plain bytes */
    for (int r = 0; r < reps; r++) {
        ids.n = 0;
        double a = now();
        if (tok_encode(t, text, (size_t)n, 0, &ids, err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        double b = now();
        s.n = 0;
        if (tok_decode(t, ids.v, ids.n, 0, &s, err)) return 1;
        double c = now();
        size_t nt = ids.n;
        ids.n = 0;
        if (tok_encode(t, text, (size_t)n, TOK_ENC_SPECIAL, &ids, err)) return 1;
        double d = now();
        if (b - a < best_enc) best_enc = b - a;
        if (c - b < best_dec) best_dec = c - b;
        if (d - c < best_sp) best_sp = d - c;
        size_t nsp = ids.n;
        struct tok_ids di = {0};
        double e0 = now();
        for (long p = 0; p < n;) {
            const char *z = memchr(text + p, 0, (size_t)(n - p));
            long q = z ? (long)(z - text) : n;
            di.n = 0;
            if (tok_encode(t, text + p, (size_t)(q - p), TOK_ENC_SPECIAL, &di, err)) return 1;
            p = q + 1;
        }
        double e1 = now();
        tok_ids_fini(&di);
        if (e1 - e0 < best_docs) best_docs = e1 - e0;
        (void)nt;
        ids.n = nsp;
    }
    if (s.n != (size_t)n) fprintf(stderr, "bench_tok: decode does not round-trip!\n");
    printf(
        "{\"bytes\":%ld,\"tokens\":%zu,\"load_ms\":%.1f,\"encode_mb_s\":%.2f,\"decode_mb_s\":%.2f,"
        "\"encode_special_mb_s\":%.2f,\"docs_mb_s\":%.2f}\n",
        n, ids.n, load * 1e3, n / best_enc / 1e6, n / best_dec / 1e6, n / best_sp / 1e6,
        n / best_docs / 1e6);
    free(text);
    tok_ids_fini(&ids);
    sbuf_fini(&s);
    tok_destroy(t);
    return 0;
}
