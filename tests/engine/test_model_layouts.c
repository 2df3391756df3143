/* test_model_layouts.c - layouts of downloaded model files load as the same model.
 *
 * With a fresh synth seed (printed; TANDEM_TEST_SEED replays):
 *   1. `--mla-layout split` (llama.cpp's attn_k_b / attn_v_b instead of kv_b_proj) and the
 *      default kv_b layout give the same kv_b rows and bitwise-identical CPU logits for the same
 *      random tokens; `convert merge` keeps the split form (same logits); `convert dequant` of the
 *      split model writes kv_b_proj with those rows.
 *   2. `--split-count 3` writes a gguf-split set; the model directory and a path naming any one
 *      shard open the whole set; a missing shard is an error naming it.
 */
#include "tests/check.h"
#include "common/err.h"
#include "engine/weights/convert.h"
#include "engine/weights/weights.h"
#include "tests/engine/model_util.h"

#include <sys/stat.h>
#include <unistd.h>

#define NTOK 24

static char root[256];

static void cleanup(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (root[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

static struct wt_model *open_ok(const char *path)
{
    char err[ERR_LEN] = "";
    struct wt_model *w = NULL;
    int rc = wt_open(path, &w, err);
    if (!rc) rc = wt_validate(w, err);
    if (rc) fprintf(stderr, "%s: %s\n", path, err);
    CHECK_EQ(rc, 0);
    return w;
}

static void synth(unsigned long long seed, const char *name, const char *extra, char *dir)
{
    snprintf(dir, 512, "%s/%s", root, name);
    int st = make_synth("tiny", seed, dir, extra);
    if (st == -1) SKIP("TANDEM_BIN is not set");
    CHECK_EQ(st, 0);
}

/* logits of every position of toks on the scalar CPU backend */
static float *logits(const struct wt_model *w, const int32_t *toks)
{
    char err[ERR_LEN] = "";
    struct ops *o = NULL;
    struct model *m = NULL;
    struct ops_params op = {.isa = "scalar", .n_threads = 2, .max_tokens = NTOK};
    int rc = tm_create(w, &op, &o, &m, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    struct tkv kv;
    CHECK_EQ(tkv_init(&kv, model_n_layers(m), model_kv_dim(m), 1, NTOK, 16), 0);
    float *out = malloc(sizeof *out * (size_t)NTOK * (size_t)model_vocab(m));
    CHECK(out != NULL);
    CHECK_EQ(run_seq(m, &kv, 0, toks, NTOK, 0, out, err), 0);
    tkv_free(&kv);
    tm_destroy(o, m);
    return out;
}

/* every layer's kv_b rows of a and b are the same floats */
static void same_kv_b(const struct wt_model *a, const struct wt_model *b)
{
    const struct wt_hparams *hp = wt_hparams(a);
    int64_t rows = (int64_t)hp->n_heads * (hp->qk_nope + hp->v_head), L = hp->kv_lora_rank;
    float *x = malloc(sizeof *x * (size_t)(rows * L)), *y = malloc(sizeof *y * (size_t)(rows * L));
    char err[ERR_LEN] = "";
    CHECK(x && y);
    for (int l = 0; l < hp->n_layers; l++) {
        CHECK_EQ(wt_kv_b_rows(a, l, 0, rows, x, err), 0);
        CHECK_EQ(wt_kv_b_rows(b, l, 0, rows, y, err), 0);
        CHECK(memcmp(x, y, sizeof *x * (size_t)(rows * L)) == 0);
    }
    free(x);
    free(y);
}

int main(void)
{
    unsigned long long seed = check_seed(), mseed = seed % 1000000007ull;
    snprintf(root, sizeof root, "/tmp/tandem-test-model-layouts-%d", (int)getpid());
    CHECK(mkdir(root, 0700) == 0);
    atexit(cleanup);
    char kvb[512], split[512], deq[512], p[600], q[600], err[ERR_LEN] = "";
    synth(mseed, "kv_b", "--threads 2", kvb);
    synth(mseed, "split", "--threads 2 --mla-layout split --split-count 3", split);

    /* 1. both MLA layouts: same rows, same logits */
    struct wt_model *a = open_ok(kvb), *b = open_ok(split);
    const struct wt_hparams *hp = wt_hparams(a);
    for (int l = 0; l < hp->n_layers; l++) {
        CHECK(!wt_kv_b_split(a, l) && wt_getf(a, "blk.%d.attn_kv_b.weight", l));
        CHECK(wt_kv_b_split(b, l) && !wt_getf(b, "blk.%d.attn_kv_b.weight", l));
        const struct wt_tensor *kb = wt_getf(b, "blk.%d.attn_k_b.weight", l);
        CHECK(kb && kb->ndim == 3);
        CHECK_EQ(kb->shape[0], hp->n_heads);
        CHECK_EQ(kb->shape[1], hp->kv_lora_rank);
        CHECK_EQ(kb->shape[2], hp->qk_nope);
    }
    same_kv_b(a, b);
    int32_t toks[NTOK];
    uint64_t r = seed;
    for (int i = 0; i < NTOK; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((r >> 33) % (uint64_t)hp->vocab_size);
    }
    size_t nl = sizeof(float) * (size_t)NTOK * (size_t)hp->vocab_size;
    float *la = logits(a, toks), *lb = logits(b, toks);
    CHECK(memcmp(la, lb, nl) == 0);
    free(lb);
    /* convert merge keeps the split form */
    char merged[600];
    snprintf(merged, sizeof merged, "%s/merged", root);
    int rc = wt_convert_merge(split, NULL, merged, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    struct wt_model *mg = open_ok(merged);
    CHECK(wt_kv_b_split(mg, 0));
    float *lm = logits(mg, toks);
    CHECK(memcmp(la, lm, nl) == 0);
    free(lm);
    free(la);
    wt_close(mg);
    snprintf(deq, sizeof deq, "%s/dequant", root);
    rc = wt_convert_dequant(split, deq, QTYPE_F32, 2, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    struct wt_model *d = open_ok(deq);
    CHECK(!wt_kv_b_split(d, 0));
    same_kv_b(a, d);
    wt_close(d);
    wt_close(a);

    /* 2. the gguf-split set: from the directory (above) and from any shard */
    CHECK_EQ(wt_n_files(b), 4);
    for (int k = 1; k <= 3; k++) {
        snprintf(p, sizeof p, "%s/experts-%05d-of-00003.gguf", split, k);
        struct wt_model *s;
        CHECK_EQ(wt_open(p, &s, err), 0);
        CHECK_EQ(wt_n_files(s), 3);
        for (int l = 0; l < hp->n_layers; l++) {
            CHECK(wt_getf(s, "blk.%d.attn_v_b.weight", l) != NULL);
            if (wt_layer_is_moe(hp, l)) CHECK(wt_getf(s, "blk.%d.ffn_down_exps.weight", l) != NULL);
        }
        wt_close(s);
    }
    wt_close(b);
    snprintf(p, sizeof p, "%s/experts-00002-of-00003.gguf", split);
    snprintf(q, sizeof q, "%s/moved.bin", root);
    CHECK(rename(p, q) == 0);
    struct wt_model *x;
    CHECK(wt_open(split, &x, err) != 0);
    CHECK_CONTAINS(err, "experts-00002-of-00003.gguf is missing");
    char one[600];
    snprintf(one, sizeof one, "%s/experts-00003-of-00003.gguf", split);
    CHECK(wt_open(one, &x, err) != 0);
    CHECK_CONTAINS(err, p);
    return 0;
}
