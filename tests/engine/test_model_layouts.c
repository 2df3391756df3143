/* test_model_layouts.c - layouts of downloaded model files load as the same model.
 *
 * With a fresh synth seed (printed; TANDEM_TEST_SEED replays):
 *   1. `--mla-layout split` (llama.cpp's attn_k_b / attn_v_b instead of kv_b_proj) and the
 *      default kv_b layout give the same kv_b rows and bitwise-identical CPU logits for the same
 *      random tokens; `convert merge` keeps the split form (same logits); `convert dequant` of the
 *      split model writes kv_b_proj with those rows, `convert quantize` of either layout the same
 *      model (same logits); `tandem inspect --json` reports the layout
 *      and plans fp32 kv_b halves on the GPU for the split form.
 *   2. `--split-count 3` writes a gguf-split set; the model directory and a path naming any one
 *      shard open the whole set; a missing shard is an error naming it.
 *      A whole model in one GGUF file (llama.cpp's form: stacked experts, split kv_b, the
 *      hyperparameters from the metadata alone) gives the logits of the directory it was made
 *      from (`convert dequant` output, all F32).
 *   3. a split model missing attn_v_b, or with attn_k_b's dims swapped, fails validation and
 *      model creation with errors naming the tensor; attn_k_b stored flat ([H * L, nope]) is
 *      accepted with the same values.
 */
#include "tests/check.h"
#include "common/err.h"
#include "engine/weights/convert.h"
#include "engine/weights/gguf.h"
#include "engine/weights/synth_internal.h"
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

/* dir: src's config.json and model.safetensors (no kv_b_proj) + a GGUF with layer 0's k_b of
 * b declared with GGUF ne kb_ne (kb_nd dims) and, if with_v, its v_b: a split model with only
 * layer 0's kv_b */
static void damaged(const char *src, const struct wt_model *b, const char *name,
                    const int64_t *kb_ne, int kb_nd, int with_v, char *dir)
{
    char err[ERR_LEN] = "", p[600];
    snprintf(dir, 512, "%s/%s", root, name);
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(p, sizeof p, "cp '%s/config.json' '%s/model.safetensors' '%s/'", src, src, dir);
    CHECK(system(p) == 0);
    const struct wt_tensor *k = wt_get(b, "blk.0.attn_k_b.weight");
    const struct wt_tensor *v = wt_get(b, "blk.0.attn_v_b.weight");
    int64_t v_ne[3] = {v->shape[2], v->shape[1], v->shape[0]};
    struct gguf_writer *w;
    snprintf(p, sizeof p, "%s/bad.gguf", dir);
    CHECK_EQ(gguf_writer_create(p, &w, err), 0);
    CHECK_EQ(gguf_writer_add_tensor(w, k->name, k->type, kb_nd, kb_ne, err), 0);
    if (with_v) CHECK_EQ(gguf_writer_add_tensor(w, v->name, v->type, 3, v_ne, err), 0);
    CHECK_EQ(gguf_writer_begin(w, err), 0);
    CHECK_EQ(gguf_writer_write(w, k->data, k->nbytes, err), 0);
    if (with_v) CHECK_EQ(gguf_writer_write(w, v->data, v->nbytes, err), 0);
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    gguf_writer_destroy(w);
}

/* a damaged model: validation and the model both fail with a message containing want */
static void expect_bad(const char *dir, const char *want_validate, const char *want_model)
{
    char err[ERR_LEN] = "";
    struct wt_model *w;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK(wt_validate(w, err) != 0);
    CHECK_CONTAINS(err, want_validate);
    struct ops *o = NULL;
    struct model *m = NULL;
    struct ops_params op = {.isa = "scalar", .n_threads = 1, .max_tokens = 4};
    CHECK(tm_create(w, &op, &o, &m, err) != 0);
    CHECK_CONTAINS(err, want_model);
    wt_close(w);
}

/* `tandem inspect --json dir` contains want */
static void inspect_says(const char *dir, const char *opts, const char *want)
{
    char cmd[1200], buf[1 << 16];
    snprintf(cmd, sizeof cmd, "'%s' inspect --json %s '%s'", getenv("TANDEM_BIN"), opts, dir);
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    CHECK(pclose(f) == 0);
    CHECK_CONTAINS(buf, want);
}

/* Model d (all F32: `convert dequant` output) as one GGUF file in llama.cpp's form: canonical
 * names, stacked experts, kv_b split into attn_k_b / attn_v_b, the hyperparameters only in the
 * deepseek2.* metadata. */
static void write_single_gguf(const struct wt_model *d, const char *path)
{
    const struct wt_hparams *hp = wt_hparams(d);
    const int64_t H = hp->n_heads, L = hp->kv_lora_rank, N = hp->qk_nope, HR = N + hp->v_head;
    char err[ERR_LEN] = "", nm[WT_NAME_LEN];
    float *kv = malloc(sizeof *kv * (size_t)(H * HR * L)), *row = malloc(sizeof *row * (size_t)L);
    CHECK(kv && row);
    struct gguf_writer *w;
    CHECK_EQ(gguf_writer_create(path, &w, err), 0);
    CHECK_EQ(wt__gguf_meta(w, hp), 0);
    for (int pass = 0; pass < 2; pass++) { /* declare, then write in the same order */
        if (pass) CHECK_EQ(gguf_writer_begin(w, err), 0);
        for (int i = 0; i < wt_count(d); i++) {
            const struct wt_tensor *t = wt_at(d, i);
            int l, e, end = 0;
            char pn[8];
            CHECK(t->type == QTYPE_F32);
            if (sscanf(t->name, "blk.%d.ffn_%7[a-z]_exps.%d.weight%n", &l, pn, &e, &end) == 3 &&
                !t->name[end]) {
                if (e) continue; /* the stacked tensor, once */
                int pr = !strcmp(pn, "gate") ? WT_GATE : !strcmp(pn, "up") ? WT_UP : WT_DOWN;
                int64_t ne[3] = {t->shape[1], t->shape[0], hp->n_routed};
                snprintf(nm, sizeof nm, "blk.%d.ffn_%s_exps.weight", l, pn);
                if (!pass) CHECK_EQ(gguf_writer_add_tensor(w, nm, QTYPE_F32, 3, ne, err), 0);
                for (int x = 0; pass && x < hp->n_routed; x++) {
                    struct wt_view v;
                    CHECK_EQ(wt_expert(d, l, (enum wt_proj)pr, x, &v, err), 0);
                    CHECK_EQ(gguf_writer_write(w, v.data, v.row_bytes * (size_t)v.rows, err), 0);
                }
            } else if (sscanf(t->name, "blk.%d.attn_kv_b.weight%n", &l, &end) == 1 &&
                       !t->name[end]) {
                int64_t kne[3] = {N, L, H}, vne[3] = {L, HR - N, H};
                snprintf(nm, sizeof nm, "blk.%d.attn_k_b.weight", l);
                if (!pass) CHECK_EQ(gguf_writer_add_tensor(w, nm, QTYPE_F32, 3, kne, err), 0);
                snprintf(nm, sizeof nm, "blk.%d.attn_v_b.weight", l);
                if (!pass) CHECK_EQ(gguf_writer_add_tensor(w, nm, QTYPE_F32, 3, vne, err), 0);
                if (!pass) continue;
                CHECK_EQ(wt_kv_b_rows(d, l, 0, H * HR, kv, err), 0);
                for (int64_t h = 0; h < H; h++) /* k_b[h][c][k] = kv_b[h*HR + k][c] */
                    for (int64_t c = 0; c < L; c++) {
                        for (int64_t k = 0; k < N; k++) row[k] = kv[(h * HR + k) * L + c];
                        CHECK_EQ(gguf_writer_write(w, row, sizeof *row * (size_t)N, err), 0);
                    }
                for (int64_t h = 0; h < H; h++) /* v_b[h] = kv_b rows h*HR + N .. */
                    CHECK_EQ(gguf_writer_write(w, kv + (h * HR + N) * L,
                                               sizeof *kv * (size_t)((HR - N) * L), err),
                             0);
            } else {
                int64_t ne[WT_MAX_DIMS];
                for (int k = 0; k < t->ndim; k++) ne[k] = t->shape[t->ndim - 1 - k];
                if (!pass)
                    CHECK_EQ(gguf_writer_add_tensor(w, t->name, t->type, t->ndim, ne, err), 0);
                else CHECK_EQ(gguf_writer_write(w, t->data, t->nbytes, err), 0);
            }
        }
    }
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    gguf_writer_destroy(w);
    free(kv);
    free(row);
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
    const struct wt_hparams hpv = *wt_hparams(a), *hp = &hpv; /* a is closed before the end */
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
    inspect_says(split, "", "\"mla_layout\": \"split\"");
    /* the GPU plan: the split halves are re-quantized to FP8 (gpu.requant_ggml), else fp32 */
    inspect_says(split, "", "\"kv_b_type\": \"f8_e4m3\"");
    inspect_says(split, "--requant-ggml off", "\"kv_b_type\": \"f32\"");
    inspect_says(kvb, "", "\"mla_layout\": \"kv_b\"");
    inspect_says(kvb, "--requant-ggml off", "\"kv_b_type\": \"f8_e4m3\"");
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
    /* the whole model in one GGUF file (split kv_b, hyperparameters from its metadata only)
     * computes what the dequantized directory does */
    char single[600];
    snprintf(single, sizeof single, "%s/single", root);
    CHECK(mkdir(single, 0700) == 0);
    snprintf(single, sizeof single, "%s/single/model.gguf", root);
    write_single_gguf(d, single);
    struct wt_model *g = open_ok(single);
    CHECK(wt_kv_b_split(g, 0));
    CHECK_EQ(wt_n_files(g), 1);
    la = logits(d, toks);
    float *lg = logits(g, toks);
    CHECK(memcmp(la, lg, nl) == 0);
    free(la);
    free(lg);
    wt_close(g);
    wt_close(d);
    /* convert quantize of either layout: the same kv_b_proj, the same logits */
    char qa[600], qb[600];
    snprintf(qa, sizeof qa, "%s/quant-kv_b", root);
    snprintf(qb, sizeof qb, "%s/quant-split", root);
    CHECK_EQ(wt_convert_quantize(kvb, qa, QTYPE_Q8_0, 2, err), 0);
    rc = wt_convert_quantize(split, qb, QTYPE_Q8_0, 2, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    struct wt_model *ma = open_ok(qa), *mb = open_ok(qb);
    CHECK(!wt_kv_b_split(mb, 0));
    la = logits(ma, toks);
    float *lq = logits(mb, toks);
    CHECK(memcmp(la, lq, nl) == 0);
    free(la);
    free(lq);
    wt_close(ma);
    wt_close(mb);
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

    /* 3. damaged split tensors: clear errors, from validation and from the model */
    const struct wt_tensor *kb0 = wt_get(b, "blk.0.attn_k_b.weight");
    int64_t good[3] = {kb0->shape[2], kb0->shape[1], kb0->shape[0]};
    int64_t swapped[3] = {kb0->shape[1], kb0->shape[2], kb0->shape[0]};
    char bad[512];
    damaged(split, b, "no-v_b", good, 3, 0, bad);
    expect_bad(bad, "'blk.0.attn_v_b.weight'", "attn_v_b.weight");
    damaged(split, b, "k_b-transposed", swapped, 3, 1, bad);
    expect_bad(bad, "'blk.0.attn_k_b.weight' has shape", "blk.0.attn_k_b.weight: shape is not");
    /* k_b stored flat as GGUF ne {nope, L * H}: layer 0 passes (layer 1 then lacks kv_b) and
     * gives the same rows */
    int64_t flat[2] = {kb0->shape[2], kb0->shape[1] * kb0->shape[0]};
    damaged(split, b, "k_b-flat", flat, 2, 1, bad);
    expect_bad(bad, "'blk.1.attn_kv_b.weight' (or llama.cpp's split", "layer 1");
    {
        struct wt_model *fw;
        CHECK_EQ(wt_open(bad, &fw, err), 0);
        int64_t rows = (int64_t)hp->n_heads * (hp->qk_nope + hp->v_head), L = hp->kv_lora_rank;
        float *x = malloc(sizeof *x * (size_t)(rows * L)),
              *y = malloc(sizeof *y * (size_t)(rows * L));
        CHECK(x && y);
        CHECK_EQ(wt_kv_b_rows(fw, 0, 0, rows, x, err), 0);
        CHECK_EQ(wt_kv_b_rows(b, 0, 0, rows, y, err), 0);
        CHECK(memcmp(x, y, sizeof *x * (size_t)(rows * L)) == 0);
        free(x);
        free(y);
        wt_close(fw);
    }
    wt_close(b);

    /* 2, continued: a shard missing, opened as the directory and as another shard */
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
