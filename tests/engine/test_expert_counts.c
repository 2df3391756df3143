/* test_expert_counts.c - the routing counts behind gpu.hot_experts (engine/model/expert_counts.h,
 * hot_experts.h), on the CPU:
 *   - counting: ec_add's two paths (one atomic add per route, and the per-call histogram) and
 *     out-of-range ids, under concurrent adders;
 *   - the file: round trip; corrupt files (empty, garbage, random bytes, truncated at random
 *     points, a flipped digit, and well-checksummed files with a bad total, a short or long
 *     row, a letter in a count, a line too many, another version), each an error with nothing
 *     added; a missing file (ERR_NOT_FOUND) and a directory (ERR_IO); another model's shape
 *     (experts, top_k, layers, MoE layer count, MoE layer indices) is ERR_INVAL;
 *   - concurrent writers: threads of this process and a forked process save different counts
 *     to one path while a reader loads it in a loop: every load is one writer's complete
 *     snapshot, and no temporary file is left;
 *   - the autosave thread (a save while the counts change, a last one at stop; a directory that
 *     does not exist is an error, not a crash);
 *   - the hot-set choice (most routes per byte, the uniform order without counts, experts of 0
 *     bytes never) and gpu.hot_experts parsing;
 *   - on models/default (CPU backend): the routes a forward computes reach the counts exactly as
 *     the route hook reports them; the CPU backend places no hot experts; and the engine
 *     (eng_create with gpu.hot_experts_file) counts a request's routes, writes them at shutdown,
 *     reads them back at the next start, and starts normally over a corrupt file (rewriting it).
 * Seeds are fresh each run (TANDEM_TEST_SEED replays).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "config/cfg.h"
#include "engine/engine.h"
#include "engine/model/expert_counts.h"
#include "engine/model/hot_experts.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/weights/weights.h"
#include "tests/check.h"
#include "tests/engine/model_util.h"

static unsigned long long rng;
static unsigned long long rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static char dir[256];

static struct wt_hparams shape(int n_layers, int first_dense, int freq, int E, int top_k)
{
    struct wt_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_layers = n_layers;
    hp.first_k_dense = first_dense;
    hp.moe_layer_freq = freq;
    hp.n_routed = E;
    hp.top_k = top_k;
    hp.hidden = 64;
    return hp;
}

static struct expert_counts *make(const struct wt_hparams *hp)
{
    char err[ERR_LEN];
    struct expert_counts *c = NULL;
    CHECK_EQ(ec_create(hp, &c, err), 0);
    return c;
}

/* random counts (some zero, some large); returns their sum */
static uint64_t fill_random(struct expert_counts *c)
{
    const struct ec_shape *s = ec_shape(c);
    uint64_t sum = 0;
    int32_t ids[64];
    for (int r = 0; r < s->moe_layers; r++)
        for (int e = 0; e < s->n_expert; e++) {
            unsigned long long k = rnd() % 4 == 0 ? 0 : rnd() % 200;
            for (int i = 0; i < 64; i++) ids[i] = e;
            for (unsigned long long left = k; left;) {
                int n = left > 64 ? 64 : (int)left;
                ec_add(c, r, ids, n);
                left -= (unsigned long long)n;
            }
            sum += k;
        }
    return sum;
}

static void check_equal(const struct expert_counts *a, const struct expert_counts *b)
{
    const struct ec_shape *s = ec_shape(a);
    for (int r = 0; r < s->moe_layers; r++)
        for (int e = 0; e < s->n_expert; e++) CHECK_EQ(ec_get(a, r, e), ec_get(b, r, e));
}

static void write_file(const char *path, const char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK_EQ(fwrite(p, 1, n, f), n);
    CHECK_EQ(fclose(f), 0);
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    CHECK(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    CHECK(b);
    CHECK_EQ(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}

static int tmp_files_left(void)
{
    DIR *d = opendir(dir);
    CHECK(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- counting */

static void test_add(void)
{
    struct wt_hparams hp = shape(4, 1, 1, 16, 4);
    struct expert_counts *c = make(&hp);
    CHECK_EQ(ec_shape(c)->moe_layers, 3);
    CHECK_EQ(ec_layer_of(c, 0), 1);
    CHECK_EQ(ec_layer_of(c, 2), 3);
    int32_t small[8] = {0, 1, 1, -1, 16, 15, 3, 3};
    ec_add(c, 0, small, 8);
    CHECK_EQ(ec_get(c, 0, 1), 2);
    CHECK_EQ(ec_get(c, 0, 15), 1);
    CHECK_EQ(ec_routes(c), 6); /* -1 and 16 are not routes */
    int32_t big[1000];
    uint64_t want[16] = {0}, valid = 0;
    for (int i = 0; i < 1000; i++) {
        big[i] = (int32_t)(rnd() % 20) - 2; /* some out of range */
        if (big[i] >= 0 && big[i] < 16) want[big[i]]++, valid++;
    }
    ec_add(c, 2, big, 1000);
    for (int e = 0; e < 16; e++) CHECK_EQ(ec_get(c, 2, e), want[e]);
    CHECK_EQ(ec_routes(c), 6 + valid);
    CHECK_EQ(ec_total(c), 6 + valid);
    ec_add(c, 3, big, 1000); /* no such row: ignored */
    ec_add(NULL, 0, big, 1000);
    CHECK_EQ(ec_total(c), 6 + valid);
    ec_add_hot(c, 5);
    CHECK_EQ(ec_hot_routes(c), 5);
    ec_destroy(c);
    printf("counting: ok\n");
}

struct adder {
    struct expert_counts *c;
    int id;
};

static void *adder_main(void *ud)
{
    struct adder *a = ud;
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = (a->id + i) % 16;
    for (int it = 0; it < 2000; it++) ec_add(a->c, it % 3, ids, it % 2 ? 100 : 8);
    return NULL;
}

static void test_concurrent_add(void)
{
    struct wt_hparams hp = shape(4, 1, 1, 16, 4);
    struct expert_counts *c = make(&hp);
    pthread_t th[4];
    struct adder ad[4];
    for (int i = 0; i < 4; i++) {
        ad[i] = (struct adder){.c = c, .id = i};
        CHECK_EQ(pthread_create(&th[i], NULL, adder_main, &ad[i]), 0);
    }
    char err[ERR_LEN], path[300];
    snprintf(path, sizeof path, "%s/adding.counts", dir);
    for (int i = 0; i < 20; i++) CHECK_EQ(ec_save(c, path, err), 0); /* while they add */
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK_EQ(ec_total(c), 4ull * 1000 * (100 + 8));
    CHECK_EQ(ec_routes(c), ec_total(c));
    CHECK_EQ(ec_save(c, path, err), 0);
    struct expert_counts *d = make(&hp);
    CHECK_EQ(ec_load(d, path, err), 0);
    check_equal(c, d);
    ec_destroy(c);
    ec_destroy(d);
    printf("concurrent adds: ok\n");
}

/* ---------------------------------------------------------------- the file */

static void test_round_trip(void)
{
    char err[ERR_LEN], path[300];
    snprintf(path, sizeof path, "%s/rt.counts", dir);
    struct wt_hparams hp = shape(7, 2, 1, 32, 6);
    struct expert_counts *a = make(&hp), *b = make(&hp);
    uint64_t sum = fill_random(a);
    int32_t huge[1] = {5}; /* a count past 2^32 survives */
    for (int i = 0; i < 3; i++) ec_add(a, 1, huge, 1);
    CHECK_EQ(ec_save(a, path, err), 0);
    CHECK_EQ(ec_load(b, path, err), 0);
    check_equal(a, b);
    CHECK_EQ(ec_total(b), sum + 3);
    CHECK_EQ(ec_routes(b), 0); /* loaded counts are not this process's routes */
    size_t n;
    char *t = read_file(path, &n);
    CHECK(!strncmp(t,
                   "tandem-expert-counts 1\nshape layers 7 moe_layers 5 experts 32 top_k 6 "
                   "hidden 64\n",
                   80));
    CHECK_CONTAINS(t, "\nlayer 2 ");
    CHECK_CONTAINS(t, "\nend ");
    free(t);
    /* loading adds */
    CHECK_EQ(ec_load(b, path, err), 0);
    CHECK_EQ(ec_get(b, 1, 5), 2 * ec_get(a, 1, 5));
    /* an empty set of counts round-trips too */
    struct expert_counts *z = make(&hp), *z2 = make(&hp);
    CHECK_EQ(ec_save(z, path, err), 0);
    CHECK_EQ(ec_load(z2, path, err), 0);
    CHECK_EQ(ec_total(z2), 0);
    CHECK_EQ(tmp_files_left(), 0);
    ec_destroy(a);
    ec_destroy(b);
    ec_destroy(z);
    ec_destroy(z2);
    printf("round trip: ok\n");
}

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* body + a correct end line */
static void write_signed(const char *path, const char *body)
{
    size_t n = strlen(body);
    char *b = malloc(n + 32);
    CHECK(b);
    memcpy(b, body, n);
    int k = snprintf(b + n, 32, "end %016llx\n", (unsigned long long)fnv(body, n));
    write_file(path, b, n + (size_t)k);
    free(b);
}

static void expect_error(struct expert_counts *c, const char *path, int code, const char *what)
{
    char err[ERR_LEN] = "";
    int rc = ec_load(c, path, err);
    if (rc != code) {
        fprintf(stderr, "%s: ec_load gave %d (%s), expected %d\n", what, rc, err, code);
        exit(1);
    }
    CHECK(err[0]);
    CHECK_CONTAINS(err, "expert counts");
    CHECK_EQ(ec_total(c), 0); /* nothing added */
}

static void test_corrupt(void)
{
    char err[ERR_LEN], path[300], good[300];
    snprintf(path, sizeof path, "%s/bad.counts", dir);
    snprintf(good, sizeof good, "%s/good.counts", dir);
    struct wt_hparams hp = shape(4, 1, 1, 8, 2);
    struct expert_counts *a = make(&hp), *c = make(&hp);
    fill_random(a);
    CHECK_EQ(ec_save(a, good, err), 0);
    size_t n;
    char *t = read_file(good, &n);

    write_file(path, "", 0);
    expect_error(c, path, ERR_FORMAT, "empty");
    write_file(path, "hello\n", 6);
    expect_error(c, path, ERR_FORMAT, "garbage");
    char junk[777];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)rnd();
    write_file(path, junk, sizeof junk);
    expect_error(c, path, ERR_FORMAT, "random bytes");
    for (int i = 0; i < 40; i++) { /* truncated anywhere, the last byte included */
        size_t cut = i == 0 ? n - 1 : (size_t)(rnd() % (n - 1));
        write_file(path, t, cut);
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", cut, n);
        expect_error(c, path, ERR_FORMAT, what);
    }
    for (int i = 0; i < 20; i++) { /* one digit changed */
        char *u = malloc(n);
        memcpy(u, t, n);
        size_t at;
        do at = (size_t)(rnd() % n);
        while (u[at] < '0' || u[at] > '9');
        u[at] = u[at] == '9' ? '0' : (char)(u[at] + 1);
        write_file(path, u, n);
        expect_error(c, path, ERR_FORMAT, "flipped digit");
        free(u);
    }
    const char *head = "tandem-expert-counts 1\nshape layers 4 moe_layers 3 experts 8 top_k 2 "
                       "hidden 64\n";
    char body[2048];
    snprintf(body, sizeof body,
             "%stotal 9\nlayer 1 1 1 1 1 1 1 1 1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 "
             "0 0 0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "total != sum");
    snprintf(body, sizeof body,
             "%stotal 7\nlayer 1 1 1 1 1 1 1 1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 0 0 "
             "0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "short row");
    snprintf(body, sizeof body,
             "%stotal 9\nlayer 1 1 1 1 1 1 1 1 1 1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 "
             "0 0 0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "long row");
    snprintf(body, sizeof body,
             "%stotal 8\nlayer 1 1 1 1 1 1 1 1 x1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 "
             "0 0 0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "letter in a count");
    snprintf(body, sizeof body,
             "%stotal 8\nlayer 1 1 1 1 1 1 1 1 1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 "
             "0 0 0\nlayer 4 0 0 0 0 0 0 0 0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "a line too many");
    snprintf(body, sizeof body,
             "%stotal 18446744073709551615\nlayer 1 18446744073709551615 1 0 0 0 0 0 0\nlayer 2 "
             "0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 0 0 0\n",
             head);
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "sum overflow");
    snprintf(body, sizeof body,
             "tandem-expert-counts 2\nshape layers 4 moe_layers 3 experts 8 top_k 2 hidden "
             "64\ntotal 0\n");
    write_signed(path, body);
    expect_error(c, path, ERR_FORMAT, "version 2");
    /* the same, well formed, loads: the signing helper itself is right */
    snprintf(body, sizeof body,
             "%stotal 8\nlayer 1 1 1 1 1 1 1 1 1\nlayer 2 0 0 0 0 0 0 0 0\nlayer 3 0 0 0 0 0 "
             "0 0 0\n",
             head);
    write_signed(path, body);
    CHECK_EQ(ec_load(c, path, err), 0);
    CHECK_EQ(ec_total(c), 8);
    ec_destroy(c);
    c = make(&hp);
    /* no file; a directory */
    snprintf(path, sizeof path, "%s/none.counts", dir);
    expect_error(c, path, ERR_NOT_FOUND, "missing");
    expect_error(c, dir, ERR_IO, "a directory");
    free(t);
    ec_destroy(a);
    ec_destroy(c);
    printf("corrupt files: ok (each an error naming the file, nothing added)\n");
}

static void test_mismatch(void)
{
    char err[ERR_LEN], path[300];
    snprintf(path, sizeof path, "%s/shape.counts", dir);
    struct wt_hparams hp = shape(11, 6, 1, 16, 4); /* MoE layers 6..10 */
    struct expert_counts *a = make(&hp);
    fill_random(a);
    CHECK_EQ(ec_save(a, path, err), 0);
    struct wt_hparams others[] = {
        shape(11, 6, 1, 32, 4), /* experts */
        shape(11, 6, 1, 16, 8), /* top_k */
        shape(12, 7, 1, 16, 4), /* layers (same MoE count) */
        shape(11, 5, 1, 16, 4), /* MoE layer count */
        shape(11, 1, 2, 16, 4), /* MoE layers 2, 4, 6, 8, 10: same counts, other indices */
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        struct expert_counts *b = make(&others[i]);
        CHECK_EQ(ec_load(b, path, err), ERR_INVAL);
        CHECK_CONTAINS(err, "another model shape");
        CHECK_CONTAINS(err, path);
        CHECK_EQ(ec_total(b), 0);
        ec_destroy(b);
    }
    struct wt_hparams h2 = hp;
    h2.hidden = 128;
    struct expert_counts *b = make(&h2);
    CHECK_EQ(ec_load(b, path, err), ERR_INVAL);
    ec_destroy(b);
    ec_destroy(a);
    printf("another model's shape: ok (%s)\n", err);
}

/* ---------------------------------------------------------------- concurrent writers */

#define WRITES 40
static const char *cpath;
static volatile int writers_done;

static void fill_const(struct expert_counts *c, uint64_t v)
{
    const struct ec_shape *s = ec_shape(c);
    int32_t ids[1];
    for (int r = 0; r < s->moe_layers; r++)
        for (int e = 0; e < s->n_expert; e++) {
            ids[0] = e;
            uint64_t have = ec_get(c, r, e);
            for (; have < v; have++) ec_add(c, r, ids, 1);
        }
}

static void *writer_main(void *ud)
{
    int id = (int)(intptr_t)ud;
    struct wt_hparams hp = shape(4, 1, 1, 8, 2);
    char err[ERR_LEN];
    for (int it = 0; it < WRITES; it++) {
        struct expert_counts *c = make(&hp);
        fill_const(c, (uint64_t)(id * 100 + it % 7 + 1));
        CHECK_EQ(ec_save(c, cpath, err), 0);
        ec_destroy(c);
    }
    return NULL;
}

static void *reader_main(void *ud)
{
    int *loads = ud;
    struct wt_hparams hp = shape(4, 1, 1, 8, 2);
    char err[ERR_LEN];
    while (!writers_done) {
        struct expert_counts *c = make(&hp);
        int rc = ec_load(c, cpath, err);
        if (rc == ERR_NOT_FOUND) {
            ec_destroy(c);
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "a load during concurrent writes failed: %s\n", err);
            exit(1);
        }
        uint64_t v = ec_get(c, 0, 0);
        CHECK(v > 0);
        for (int r = 0; r < 3; r++)
            for (int e = 0; e < 8; e++) CHECK_EQ(ec_get(c, r, e), v); /* one writer's whole */
        (*loads)++;
        ec_destroy(c);
    }
    return NULL;
}

static void test_concurrent_writes(void)
{
    static char path[300];
    snprintf(path, sizeof path, "%s/shared.counts", dir);
    cpath = path;
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) { /* another process writing the same file */
        writer_main((void *)(intptr_t)9);
        _exit(0);
    }
    pthread_t w[3], r;
    int loads = 0;
    writers_done = 0;
    CHECK_EQ(pthread_create(&r, NULL, reader_main, &loads), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(pthread_create(&w[i], NULL, writer_main, (void *)(intptr_t)(i + 1)), 0);
    for (int i = 0; i < 3; i++) pthread_join(w[i], NULL);
    int st = 0;
    CHECK_EQ(waitpid(child, &st, 0), child);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    writers_done = 1;
    pthread_join(r, NULL);
    /* the file is one of the writers' last versions */
    struct wt_hparams hp = shape(4, 1, 1, 8, 2);
    struct expert_counts *c = make(&hp);
    char err[ERR_LEN];
    CHECK_EQ(ec_load(c, path, err), 0);
    uint64_t v = ec_get(c, 0, 0);
    CHECK(v % 100 >= 1 && v % 100 <= 7 && v / 100 >= 1 && v / 100 <= 9);
    CHECK_EQ(tmp_files_left(), 0);
    ec_destroy(c);
    printf("concurrent writers (3 threads + 1 process, %d writes each) with a reader: %d loads, "
           "each a complete file: ok\n",
           WRITES, loads);
}

/* ---------------------------------------------------------------- autosave */

static void test_autosave(void)
{
    char err[ERR_LEN], path[300];
    snprintf(path, sizeof path, "%s/auto.counts", dir);
    struct wt_hparams hp = shape(4, 1, 1, 8, 2);
    struct expert_counts *c = make(&hp), *d = make(&hp);
    CHECK_EQ(ec_autosave_start(c, path, 20, err), 0);
    CHECK(ec_autosave_start(c, path, 20, err) != 0); /* one at a time */
    int32_t ids[4] = {1, 2, 3, 1};
    ec_add(c, 1, ids, 4);
    struct stat st;
    int waited = 0;
    while (stat(path, &st) != 0 && waited < 5000) {
        usleep(10000);
        waited += 10;
    }
    CHECK(waited < 5000);
    usleep(50000);
    CHECK_EQ(ec_load(d, path, err), 0);
    CHECK_EQ(ec_get(d, 1, 1), 2);
    ec_add(c, 2, ids, 4);
    CHECK_EQ(ec_autosave_stop(c, err), 0); /* the last save has everything */
    ec_destroy(d);
    d = make(&hp);
    CHECK_EQ(ec_load(d, path, err), 0);
    check_equal(c, d);
    CHECK_EQ(ec_autosave_stop(c, err), 0); /* stopped: a no-op */
    /* a file that cannot be written: logged, reported by stop, no crash */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.counts", dir);
    CHECK_EQ(ec_autosave_start(c, bad, 5, err), 0);
    ec_add(c, 0, ids, 4);
    usleep(30000);
    CHECK_EQ(ec_autosave_stop(c, err), ERR_IO);
    CHECK_CONTAINS(err, "no/such/dir");
    ec_destroy(c); /* with autosave running it would stop it first */
    ec_destroy(d);
    c = make(&hp);
    CHECK_EQ(ec_autosave_start(c, path, 1000, err), 0);
    ec_destroy(c);
    printf("autosave: ok\n");
}

/* ---------------------------------------------------------------- choice and parsing */

static void test_choose(void)
{
    struct wt_hparams hp = shape(5, 1, 1, 8, 2); /* 4 MoE rows x 8 */
    struct expert_counts *c = make(&hp);
    const int M = 4, E = 8, N = M * E;
    size_t bytes[32];
    uint8_t hot[32];
    struct ec_choice ch;
    for (int i = 0; i < N; i++) bytes[i] = 1000;
    /* no counts: expert 0 of every layer, then expert 1, ... */
    CHECK_EQ(ec_choose_hot(c, bytes, 2 * M * 1000 + 999, hot, &ch), 2 * M);
    CHECK_EQ(ch.from_counts, 0);
    CHECK_EQ(ch.layers, M);
    for (int r = 0; r < M; r++)
        for (int e = 0; e < E; e++) CHECK_EQ(hot[r * E + e], e < 2);
    CHECK_EQ(ec_choose_hot(c, bytes, 3 * 1000, hot, &ch), 3);
    CHECK(hot[0 * E + 0] && hot[1 * E + 0] && hot[2 * E + 0] && !hot[3 * E + 0]);
    /* counts: the most routed; with equal bytes a threshold splits chosen from not */
    uint64_t sum = fill_random(c);
    int k = 1 + (int)(rnd() % (N - 1));
    CHECK_EQ(ec_choose_hot(c, bytes, k * 1000.0, hot, &ch), k);
    CHECK_EQ(ch.total, sum);
    CHECK_EQ(ch.from_counts, sum > 0);
    uint64_t lo = UINT64_MAX, hi = 0, routes = 0;
    for (int i = 0; i < N; i++) {
        uint64_t v = ec_get(c, i / E, i % E);
        if (hot[i]) lo = v < lo ? v : lo, routes += v;
        else hi = v > hi ? v : hi;
    }
    CHECK(lo >= hi);
    CHECK_EQ(ch.routes, routes);
    CHECK_EQ(ch.bytes, k * 1000.0);
    /* 0 bytes: never; budget 0: none */
    for (int i = 0; i < N; i++) bytes[i] = i % 2 ? 0 : 1000;
    CHECK_EQ(ec_choose_hot(c, bytes, 1e12, hot, &ch), N / 2);
    CHECK_EQ(ch.candidates, N / 2);
    for (int i = 0; i < N; i++) CHECK_EQ(hot[i], i % 2 == 0);
    CHECK_EQ(ec_choose_hot(c, bytes, 0, hot, &ch), 0);
    ec_destroy(c);
    /* routes per byte: 60 routes in 100 bytes beat 100 in 200; the rest fills what is left */
    c = make(&hp);
    int32_t a[100], b[60];
    for (int i = 0; i < 100; i++) a[i] = 0;
    for (int i = 0; i < 60; i++) b[i] = 1;
    ec_add(c, 0, a, 100);
    ec_add(c, 0, b, 60);
    for (int i = 0; i < N; i++) bytes[i] = 100;
    bytes[0] = 200;
    CHECK_EQ(ec_choose_hot(c, bytes, 250, hot, &ch), 2); /* expert 1, then one of 100 bytes */
    CHECK(hot[1] && !hot[0]);
    CHECK_EQ(ch.routes, 60);
    ec_destroy(c);
    printf("hot-set choice: ok\n");
}

static void test_parse(void)
{
    enum ec_hot_mode m;
    long long mib;
    char err[ERR_LEN];
    CHECK_EQ(ec_parse_hot("off", &m, &mib, err), 0);
    CHECK_EQ(m, EC_HOT_OFF);
    CHECK_EQ(ec_parse_hot("", &m, &mib, err), 0);
    CHECK_EQ(m, EC_HOT_OFF);
    CHECK_EQ(ec_parse_hot(NULL, &m, &mib, err), 0);
    CHECK_EQ(ec_parse_hot("auto", &m, &mib, err), 0);
    CHECK_EQ(m, EC_HOT_AUTO);
    CHECK_EQ(ec_parse_hot("4096", &m, &mib, err), 0);
    CHECK_EQ(m, EC_HOT_MIB);
    CHECK_EQ(mib, 4096);
    CHECK_EQ(ec_parse_hot("16777216", &m, &mib, err), 0);
    const char *bad[] = {"0", "-5", "12x", "on", "1e3", "16777217", "99999999999999999999", " 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(ec_parse_hot(bad[i], &m, &mib, err), ERR_CONFIG);
        CHECK_CONTAINS(err, "gpu.hot_experts");
    }
    printf("gpu.hot_experts parsing: ok\n");
}

/* ---------------------------------------------------------------- on a model */

struct hook {
    uint64_t *want; /* [n_layers][E] */
    int E;
};

static void route_hook(void *ud, int layer, int n, const int32_t *ids, int top_k)
{
    struct hook *h = ud;
    for (int i = 0; i < n * top_k; i++) h->want[(size_t)layer * h->E + ids[i]]++;
}

static void test_model(const char *model)
{
    char err[ERR_LEN];
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(model, &w, err), 0);
    const struct wt_hparams *hp = wt_hparams(w);
    struct ops_params op = {.max_tokens = 64, .n_threads = 2, .pin = 0};
    CHECK_EQ(ops_params_parse(&op, "cpu", NULL, err), 0);
    struct ops *o = NULL;
    struct model *m = NULL;
    CHECK_EQ(tm_create(w, &op, &o, &m, err), 0);
    struct expert_counts *c = NULL;
    CHECK_EQ(ec_create(hp, &c, err), 0);
    CHECK_EQ(hot_experts_attach(m, o, c, err), 0);
    struct hook h = {.want = calloc((size_t)hp->n_layers * hp->n_routed, sizeof(uint64_t)),
                     .E = hp->n_routed};
    model_set_route_hook(m, route_hook, &h);
    struct tkv kv;
    CHECK_EQ(tkv_init(&kv, model_n_layers(m), model_kv_dim(m), 1, 128, 16), 0);
    int32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = 2 + (int)(rnd() % (unsigned)(hp->vocab_size - 2));
    float *lg = malloc((size_t)40 * hp->vocab_size * sizeof(float));
    CHECK_EQ(run_seq(m, &kv, 0, tok, 32, 0, lg, err), 0); /* a prefill */
    for (int i = 32; i < 40; i++) CHECK_EQ(run_seq(m, &kv, 0, tok + i, 1, i, lg, err), 0);
    const struct ec_shape *s = ec_shape(c);
    uint64_t tot = 0;
    for (int r = 0; r < s->moe_layers; r++)
        for (int e = 0; e < s->n_expert; e++) {
            CHECK_EQ(ec_get(c, r, e), h.want[(size_t)ec_layer_of(c, r) * h.E + e]);
            tot += ec_get(c, r, e);
        }
    CHECK_EQ(tot, 40ull * hp->top_k * s->moe_layers);
    CHECK_EQ(ec_routes(c), tot);
    /* the CPU backend holds no hot experts */
    struct hot_report hr;
    CHECK_EQ(hot_experts_place(m, o, c, 1e12, &hr, err), 0);
    CHECK_EQ(hr.ch.candidates, 0);
    CHECK_EQ(hr.ch.chosen, 0);
    char d[512];
    hot_experts_describe(&hr, d, sizeof d);
    CHECK_CONTAINS(d, "none");
    struct ops_moe *x = model_moe(m, 0, NULL);
    CHECK(x);
    uint8_t one[1] = {1};
    CHECK_EQ(ops_moe_set_hot(o, x, one, err), ERR_UNSUPPORTED);
    CHECK_EQ(ops_moe_hot_bytes(o, x, 0), 0);
    /* counts of another shape are refused */
    struct wt_hparams other = *hp;
    other.n_routed *= 2;
    struct expert_counts *c2 = NULL;
    CHECK_EQ(ec_create(&other, &c2, err), 0);
    CHECK_EQ(hot_experts_attach(m, o, c2, err), ERR_INVAL);
    ec_destroy(c2);
    tkv_free(&kv);
    free(lg);
    free(h.want);
    tm_destroy(o, m);
    ec_destroy(c);
    wt_close(w);
    printf("models/default, CPU backend: the counts equal the routes of %d token forwards: ok\n",
           40);
}

/* ---------------------------------------------------------------- through the engine */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done;

static void on_event(void *ud, const struct eng_event *ev)
{
    (void)ud;
    pthread_mutex_lock(&mu);
    if (ev->kind == ENG_EV_DONE) done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static struct engine *engine_on(const char *model, const char *file)
{
    struct cfg c;
    char err[ERR_LEN];
    cfg_init_defaults(&c);
    CHECK_EQ(cfg_set(&c, "model", "path", model, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "gpu", "placement", "cpu", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "gpu", "hot_experts_file", file, "test", err), 0);
    CHECK_EQ(cfg_set(&c, "cpu", "threads", "2", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "cpu", "pin", "0", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "kv_blocks", "64", "test", err), 0);
    CHECK_EQ(cfg_set(&c, "engine", "max_batch_tokens", "64", "test", err), 0);
    struct engine *e = NULL;
    if (eng_create(&c, NULL, NULL, &e, err) != 0) {
        fprintf(stderr, "eng_create: %s\n", err);
        exit(1);
    }
    cfg_fini(&c);
    return e;
}

static void test_engine(const char *model)
{
    char err[ERR_LEN], path[300];
    snprintf(path, sizeof path, "%s/engine.counts", dir);
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(model, &w, err), 0);
    struct wt_hparams hp = *wt_hparams(w);
    wt_close(w);
    int M = 0;
    for (int l = 0; l < hp.n_layers; l++) M += wt_layer_is_moe(&hp, l) != 0;
    /* first start: no file; one request; shutdown writes its routes */
    struct engine *e = engine_on(model, path);
    struct eng_stats st;
    eng_stats(e, &st);
    CHECK_EQ(st.expert_routes_total, 0);
    CHECK_EQ(st.hot_experts, 0);
    const int NP = 12, NG = 5;
    struct eng_request q;
    memset(&q, 0, sizeof q);
    q.prompt = malloc(NP * sizeof(int32_t));
    for (int i = 0; i < NP; i++) q.prompt[i] = 2 + (int32_t)(rnd() % (unsigned)(hp.vocab_size - 2));
    q.n_prompt = NP;
    q.samp.temperature = 0;
    q.samp.top_p = 1.0f;
    q.samp.repetition_penalty = 1.0f;
    q.max_tokens = NG;
    q.ignore_eos = 1;
    q.on_event = on_event;
    done = 0;
    CHECK_EQ(eng_submit(e, &q, err), 0);
    pthread_mutex_lock(&mu);
    while (!done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    eng_stats(e, &st);
    /* the prompt and every generated token but the last went through the model */
    uint64_t routes = (uint64_t)(NP + NG - 1) * hp.top_k * M;
    CHECK_EQ(st.expert_routes_total, routes);
    CHECK_EQ(st.hot_expert_routes_total, 0);
    eng_destroy(e);
    struct expert_counts *c = NULL;
    CHECK_EQ(ec_create(&hp, &c, err), 0);
    CHECK_EQ(ec_load(c, path, err), 0);
    CHECK_EQ(ec_total(c), routes);
    ec_destroy(c);
    /* second start: read back (and written again at shutdown, unchanged) */
    e = engine_on(model, path);
    eng_stats(e, &st);
    CHECK_EQ(st.expert_routes_total, 0); /* this process's routes */
    eng_destroy(e);
    CHECK_EQ(ec_create(&hp, &c, err), 0);
    CHECK_EQ(ec_load(c, path, err), 0);
    CHECK_EQ(ec_total(c), routes);
    ec_destroy(c);
    /* a corrupt file: the engine starts, ignores it, rewrites it */
    write_file(path, "tandem-expert-counts 1\ngarbage", 30);
    e = engine_on(model, path);
    eng_destroy(e);
    CHECK_EQ(ec_create(&hp, &c, err), 0);
    CHECK_EQ(ec_load(c, path, err), 0);
    CHECK_EQ(ec_total(c), 0);
    ec_destroy(c);
    CHECK_EQ(tmp_files_left(), 0);
    printf("engine: %llu routes counted, written at shutdown, read at the next start; a corrupt "
           "file ignored and rewritten: ok\n",
           (unsigned long long)routes);
}

int main(void)
{
    rng = check_seed() | 1;
    snprintf(dir, sizeof dir, "/tmp/tandem-counts-XXXXXX");
    CHECK(mkdtemp(dir));
    test_add();
    test_concurrent_add();
    test_round_trip();
    test_corrupt();
    test_mismatch();
    test_concurrent_writes();
    test_autosave();
    test_choose();
    test_parse();
    const char *src = getenv("TANDEM_SRC");
    char model[600];
    snprintf(model, sizeof model, "%s/models/default", src ? src : ".");
    struct stat st;
    if (stat(model, &st) == 0) {
        test_model(model);
        test_engine(model);
    } else {
        printf("models/default not found (TANDEM_SRC): model and engine checks skipped\n");
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    printf("PASS\n");
    return 0;
}
