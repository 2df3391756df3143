/* test_ops_fused.c - the fused forms of ops.h on a backend without them (the CPU one): each must
 * give exactly what the plain ops give (ops_rmsnorm_lin = ops_rmsnorm, ops_swiglu_gu = ops_swiglu
 * on the two halves, ops_rope2 = two ops_rope calls), ops_lin_create_cat must refuse with
 * ERR_UNSUPPORTED (model.c then makes two linears) and the graph bracket must say "run the
 * layers" and "done". Fresh random inputs (TANDEM_TEST_SEED replays). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/ops.h"
#include "tests/check.h"

static unsigned long long rs;

static float rnd(void)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)((double)(rs >> 11) * 0x1.0p-53 * 4.0 - 2.0);
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    CHECK(p != NULL);
    for (size_t i = 0; i < n; i++) p[i] = rnd();
    return p;
}

int main(void)
{
    rs = check_seed() | 1;
    char err[ERR_LEN];
    struct ops_params p = {.max_tokens = 16, .n_threads = 1};
    CHECK_EQ(ops_params_parse(&p, "cpu", NULL, err), 0);
    struct ops *o = NULL;
    CHECK_EQ(ops_create(&p, &o, err), 0);
    const int n = 5, dim = 256, np = 32, H = 3, ld = 7 * 64;

    /* rmsnorm_lin (no next) */
    float *x = rand_buf((size_t)n * dim), *g = rand_buf(dim);
    float *y1 = calloc((size_t)n * dim, 4), *y2 = calloc((size_t)n * dim, 4);
    CHECK(y1 && y2);
    ops_rmsnorm(o, x, dim, g, n, dim, 1e-6f, y1, dim);
    ops_rmsnorm_lin(o, x, dim, g, n, dim, 1e-6f, y2, dim, NULL);
    CHECK(memcmp(y1, y2, (size_t)n * dim * 4) == 0);

    /* swiglu_gu against ops_swiglu on copies of the halves */
    float *gu = rand_buf((size_t)n * 2 * dim), *ga = malloc((size_t)n * dim * 4),
          *up = malloc((size_t)n * dim * 4);
    CHECK(ga && up);
    for (int t = 0; t < n; t++) {
        memcpy(ga + (size_t)t * dim, gu + (size_t)t * 2 * dim, (size_t)dim * 4);
        memcpy(up + (size_t)t * dim, gu + (size_t)t * 2 * dim + dim, (size_t)dim * 4);
    }
    ops_swiglu(o, ga, up, (int64_t)n * dim, y1);
    ops_swiglu_gu(o, gu, n, dim, y2, NULL);
    CHECK(memcmp(y1, y2, (size_t)n * dim * 4) == 0);

    /* rope2: k_pe (1 head, out of place) and q_pe (H heads, strided) */
    float freq[32];
    for (int i = 0; i < np; i++) freq[i] = powf(10000.0f, -2.0f * i / 64.0f);
    struct ops_rope r = {.n_pairs = np, .freq = freq, .amp = 1.0f};
    int32_t pos[5] = {0, 7, 100, 4095, 33};
    float *kx = rand_buf((size_t)n * ld), *qx = rand_buf((size_t)n * H * ld);
    float *ky1 = calloc((size_t)n * 64, 4), *ky2 = calloc((size_t)n * 64, 4);
    float *qy1 = calloc((size_t)n * H * 64, 4), *qy2 = calloc((size_t)n * H * 64, 4);
    CHECK(ky1 && ky2 && qy1 && qy2);
    ops_rope(o, &r, pos, n, 1, kx + 100, ld, 0, ky1, 64, 0);
    ops_rope(o, &r, pos, n, H, qx + 5, H * ld, ld, qy1, H * 64, 64);
    struct ops_rope_job a = {.n_heads = 1, .x = kx + 100, .ldx_tok = ld, .y = ky2, .ldy_tok = 64};
    struct ops_rope_job b = {.n_heads = H,
                             .x = qx + 5,
                             .ldx_tok = H * ld,
                             .ldx_head = ld,
                             .y = qy2,
                             .ldy_tok = H * 64,
                             .ldy_head = 64};
    ops_rope2(o, &r, pos, n, &a, &b);
    CHECK(memcmp(ky1, ky2, (size_t)n * 64 * 4) == 0);
    CHECK(memcmp(qy1, qy2, (size_t)n * H * 64 * 4) == 0);
    memset(ky2, 0, (size_t)n * 64 * 4);
    ops_rope2(o, &r, pos, n, &a, NULL);
    CHECK(memcmp(ky1, ky2, (size_t)n * 64 * 4) == 0);

    /* no fused linears, no graphs */
    struct ops_lin *l = (struct ops_lin *)&l;
    struct wt_view v = {.type = QTYPE_F32, .rows = 128, .cols = 128, .data = x, .row_bytes = 512};
    CHECK_EQ(ops_lin_create_cat(o, &v, &v, &l, err), ERR_UNSUPPORTED);
    CHECK(l == NULL);
    CHECK_EQ(ops_graph_begin(o, NULL, NULL, &r, NULL), 0);
    CHECK_EQ(ops_graph_end(o), 0);
    CHECK_EQ(ops_error(o, err), 0);

    free(x);
    free(g);
    free(y1);
    free(y2);
    free(gu);
    free(ga);
    free(up);
    free(kx);
    free(qx);
    free(ky1);
    free(ky2);
    free(qy1);
    free(qy2);
    ops_destroy(o);
    printf("test_ops_fused: PASS\n");
    return 0;
}
