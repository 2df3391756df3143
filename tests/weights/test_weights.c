/* test_weights.c - the tensor index end to end on synthetic models:
 *   synth tiny -> open/validate, hyperparameters, types and FP8 scale shapes, expert views;
 *   determinism (same seed, different thread count: identical bytes; other seed: different);
 *   the whole-GGUF layout (gguf-split set alone, an i-quant experts mix, 2-D weights' type);
 *   dequant -> HF float layout (per-expert) -> reopen: same values;
 *   quantize(dequant(synth)) reproduces synth's FP8/BF16/q8_0 bytes exactly;
 *   merge -> tandem hybrid -> same bytes; a hand-made KTransformers layout -> same bytes;
 *   KTransformers output without config.json: the error says what to copy where, a config.json
 *   above is used; MTP tensors skipped and summarized once (wt_skipped); missing tensor / wrong
 * shape / missing scale / incomplete split set give errors naming the tensor or file. */
#include "check.h"
#include "common/err.h"
#include "engine/weights/convert.h"
#include "engine/weights/gguf.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/weights.h"
#include "kernels/cpu/fpconv.h"

#include <math.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void path(char *out, const char *sub) { snprintf(out, 512, "%s/%s", root, sub); }

static struct wt_model *open_ok(const char *dir)
{
    char err[ERR_LEN] = "";
    struct wt_model *m;
    int rc = wt_open(dir, &m, err);
    if (!rc) rc = wt_validate(m, err);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", dir, err);
        exit(1);
    }
    return m;
}

static int files_equal(const char *a, const char *b)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* every tensor of a has the same type, shape and bytes in b (experts through wt_expert) */
static void same_tensors(const struct wt_model *a, const struct wt_model *b)
{
    const struct wt_hparams *hp = wt_hparams(a);
    int checked = 0;
    for (int i = 0; i < wt_count(a); i++) {
        const struct wt_tensor *t = wt_at(a, i);
        if (wt_name_is_routed_expert(t->name)) continue;
        const struct wt_tensor *u = wt_get(b, t->name);
        if (!u) {
            fprintf(stderr, "tensor %s missing\n", t->name);
            exit(1);
        }
        CHECK_EQ(u->type, t->type);
        CHECK_EQ(u->ndim, t->ndim);
        CHECK_EQ(u->nbytes, t->nbytes);
        if (memcmp(u->data, t->data, t->nbytes) != 0) {
            fprintf(stderr, "tensor %s differs\n", t->name);
            exit(1);
        }
        checked++;
    }
    for (int l = 0; l < hp->n_layers; l++) {
        if (!wt_layer_is_moe(hp, l)) continue;
        for (int p = 0; p < 3; p++)
            for (int e = 0; e < hp->n_routed; e++) {
                struct wt_view x, y;
                char err[ERR_LEN];
                CHECK_EQ(wt_expert(a, l, p, e, &x, err), 0);
                CHECK_EQ(wt_expert(b, l, p, e, &y, err), 0);
                CHECK_EQ(x.type, y.type);
                CHECK_EQ(x.rows, y.rows);
                CHECK_EQ(x.cols, y.cols);
                CHECK(memcmp(x.data, y.data, x.row_bytes * (size_t)x.rows) == 0);
                checked++;
            }
    }
    CHECK(checked > 20);
}

static void expect_open_fail(const char *dir, const char *want)
{
    char err[ERR_LEN] = "";
    struct wt_model *m;
    int rc = wt_open(dir, &m, err);
    if (!rc) {
        rc = wt_validate(m, err);
        wt_close(m);
    }
    if (!rc) {
        fprintf(stderr, "%s: opened fine, expected error with '%s'\n", dir, want);
        exit(1);
    }
    CHECK_CONTAINS(err, want);
}

static void run(const char *fmt, const char *a, const char *b)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    CHECK(system(cmd) == 0);
}

/* 1 when the page holding p is in an anonymous mapping (inode 0 in /proc/self/maps) */
static int page_is_anonymous(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int anon = -1;
    while (f && anon < 0 && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 && (uintptr_t)p >= lo &&
            (uintptr_t)p < hi)
            anon = ino == 0;
    }
    if (f) fclose(f);
    return anon;
}

/* wt_pages_anonymous on a random expert's bytes (an unaligned range inside the file mapping):
 * the bytes stay, the pages become anonymous, the rest of the mapping stays file-backed */
static void pages_anonymous(struct wt_model *m, unsigned long long seed)
{
    char err[ERR_LEN] = "";
    struct wt_view v;
    int e = (int)(seed % 8);
    CHECK_EQ(wt_expert(m, 1, WT_UP, e, &v, err), 0);
    const struct wt_tensor *emb = wt_get(m, "token_embd.weight");
    size_t n = v.row_bytes * (size_t)v.rows;
    uint8_t *before = malloc(n), *emb_before = malloc(emb->nbytes);
    CHECK(before && emb_before);
    memcpy(before, v.data, n);
    memcpy(emb_before, emb->data, emb->nbytes);
    CHECK_EQ(page_is_anonymous(v.data), 0);
    CHECK_EQ(wt_pages_anonymous((const uint8_t *)v.data + 1, n - 1, 1, err), 0);
    CHECK_EQ(page_is_anonymous(v.data), 1);
    CHECK_EQ(page_is_anonymous((const uint8_t *)v.data + n - 1), 1);
    CHECK_EQ(page_is_anonymous(emb->data), 0); /* the embedding is elsewhere in the file */
    CHECK(memcmp(before, v.data, n) == 0);
    CHECK(memcmp(emb_before, emb->data, emb->nbytes) == 0);
    CHECK_EQ(wt_pages_anonymous(v.data, n, 4, err), 0); /* again: anonymous to anonymous */
    CHECK(memcmp(before, v.data, n) == 0);
    free(before);
    free(emb_before);
}

/* the threaded copy: a 40 MiB file of random bytes, a range made anonymous on 4 threads (parts
 * of at least 16 MiB, so 2 run), every byte compared with the file */
static void pages_anonymous_threads(unsigned long long seed)
{
    char p[600], err[ERR_LEN] = "";
    path(p, "anon40");
    const size_t n = (size_t)40 << 20;
    uint8_t *ref = malloc(n);
    CHECK(ref != NULL);
    unsigned long long r = seed | 1;
    for (size_t i = 0; i < n; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        ref[i] = (uint8_t)r;
    }
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(ref, 1, n, f) == n);
    fclose(f);
    int fd = open(p, O_RDONLY);
    CHECK(fd >= 0);
    uint8_t *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    CHECK(m != MAP_FAILED);
    const size_t lo = 5000 + (size_t)(seed % 3000), hi = n - 7000;
    CHECK_EQ(wt_pages_anonymous(m + lo, hi - lo, 4, err), 0);
    CHECK_EQ(page_is_anonymous(m + lo), 1);
    CHECK_EQ(page_is_anonymous(m + hi - 1), 1);
    CHECK_EQ(page_is_anonymous(m), 0); /* the first page is outside the range */
    CHECK(memcmp(m, ref, n) == 0);
    munmap(m, n);
    unlink(p);
    free(ref);
}

int main(void)
{
    unsigned long long seed = check_seed();
    snprintf(root, sizeof root, "/tmp/tandem-test-weights-%d", (int)getpid());
    CHECK(mkdir(root, 0700) == 0);
    char d1[512], d2[512], d3[512], d4[512], d5[512], d6[512], d7[512], a[512], b[512];
    char err[ERR_LEN] = "";
    path(d1, "synth");
    path(d2, "synth2");
    path(d3, "dequant");
    path(d4, "quant");
    path(d5, "merged");
    path(d6, "kt");
    path(d7, "bad");

    /* ---- synth tiny */
    struct wt_synth_opts o = {.preset = "tiny",
                              .out = d1,
                              .seed = seed,
                              .experts_type = -1,
                              .dense_layers = -1,
                              .moe_layers = -1,
                              .n_experts = -1,
                              .threads = 2,
                              .experts_down_type = -1,
                              .linears_type = -1};
    if (wt_synth(&o, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct wt_model *m = open_ok(d1);
    const struct wt_hparams *hp = wt_hparams(m);
    CHECK_STR(hp->arch, "deepseek_v3");
    CHECK_EQ(hp->hidden, 256);
    CHECK_EQ(hp->n_layers, 3);
    CHECK_EQ(hp->first_k_dense, 1);
    CHECK_EQ(hp->n_routed, 8);
    CHECK(hp->n_group > 1 && hp->topk_group < hp->n_group);
    CHECK(hp->yarn);
    CHECK_EQ(hp->vocab_size % 128, 0);
    CHECK(!wt_layer_is_moe(hp, 0) && wt_layer_is_moe(hp, 1) && wt_layer_is_moe(hp, 2));
    const struct wt_tensor *t = wt_get(m, "blk.0.attn_kv_a_mqa.weight");
    CHECK(t && t->type == QTYPE_F8_E4M3 && t->shape[0] == 576 && t->shape[1] == 256);
    CHECK(t->scale && t->scale->shape[0] == 5 && t->scale->shape[1] == 2);
    t = wt_getf(m, "blk.%d.ffn_gate_exps.weight", 2);
    CHECK(t && t->type == QTYPE_Q8_0 && t->ndim == 3 && t->shape[0] == 8);
    CHECK(wt_get(m, "token_embd.weight")->type == QTYPE_BF16);
    CHECK(wt_get(m, "blk.1.exp_probs_b.bias")->type == QTYPE_F32);
    struct wt_view v;
    CHECK_EQ(wt_expert(m, 1, WT_DOWN, 7, &v, err), 0);
    CHECK(v.rows == 256 && v.cols == 256 && v.type == QTYPE_Q8_0 && v.row_bytes == 8 * 34);
    CHECK(wt_expert(m, 0, WT_DOWN, 0, &v, err) != 0); /* dense layer */
    /* weights look like N(0, 1/in): q_a std ~ 1/16 */
    t = wt_get(m, "blk.0.attn_q_a.weight");
    double s2 = 0;
    const float *sc = t->scale->data;
    for (int r = 0; r < 256; r++)
        for (int c = 0; c < 256; c++) {
            float x = fp_e4m3_to_f32(((const uint8_t *)t->data)[r * 256 + c]) *
                      sc[(r / 128) * 2 + c / 128];
            s2 += (double)x * x;
        }
    CHECK_NEAR(sqrt(s2 / 65536), 1.0 / 16, 0.01);
    pages_anonymous(m, seed);
    pages_anonymous_threads(seed);

    /* ---- determinism: same seed, one thread -> identical files; other seed -> different */
    o.out = d2;
    o.threads = 1;
    CHECK_EQ(wt_synth(&o, err), 0);
    path(a, "synth/model.safetensors");
    path(b, "synth2/model.safetensors");
    CHECK(files_equal(a, b));
    path(a, "synth/experts.gguf");
    path(b, "synth2/experts.gguf");
    CHECK(files_equal(a, b));
    o.seed = seed + 1;
    CHECK_EQ(wt_synth(&o, err), 0);
    CHECK(!files_equal(a, b));

    /* ---- --zero-but-routing: zero weights except what decides routing and sampling */
    {
        char dz[512];
        path(dz, "synthz");
        struct wt_synth_opts z = o;
        z.out = dz;
        z.zero = 2;
        z.seed = seed;
        CHECK_EQ(wt_synth(&z, err), 0);
        struct wt_model *zm = open_ok(dz);
        const char *nonzero[] = {"token_embd.weight", "output.weight", "output_norm.weight",
                                 "blk.1.ffn_gate_inp.weight", "blk.1.ffn_norm.weight"};
        const char *zero[] = {"blk.0.attn_q_a.weight", "blk.1.attn_output.weight",
                              "blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_shexp.weight"};
        for (size_t i = 0; i < sizeof nonzero / sizeof nonzero[0] + sizeof zero / sizeof zero[0];
             i++) {
            int nz = i < sizeof nonzero / sizeof nonzero[0];
            const char *nm = nz ? nonzero[i] : zero[i - sizeof nonzero / sizeof nonzero[0]];
            const struct wt_tensor *zt = wt_get(zm, nm);
            if (!zt) fprintf(stderr, "missing %s\n", nm);
            CHECK(zt != NULL);
            size_t nbytes_nonzero = 0;
            for (size_t k = 0; k < zt->nbytes; k++)
                nbytes_nonzero += ((const uint8_t *)zt->data)[k] != 0;
            if (nz != (nbytes_nonzero > 0))
                fprintf(stderr, "%s: %zu non-zero bytes\n", nm, nbytes_nonzero);
            CHECK(nz ? nbytes_nonzero > zt->nbytes / 4 : nbytes_nonzero == 0);
        }
        wt_close(zm);
    }

    /* ---- the whole-GGUF layout (llama.cpp's form): the gguf-split set alone in the directory,
     * an i-quant mix of experts, GGML 2-D weights, F32 norms and router, split MLA, the
     * hyperparameters from the metadata equal synth's */
    {
        char dg[512];
        path(dg, "synthg");
        struct wt_synth_opts g = o;
        g.out = dg;
        g.threads = 2;
        g.gguf_only = 1;
        g.gguf_split = 2;
        g.mla_split = 1;
        g.experts_type = QTYPE_IQ1_M;
        g.experts_down_type = QTYPE_Q4_K;
        g.linears_type = QTYPE_Q5_K; /* i-quant 2-D weights: engine / model_iquants */
        CHECK_EQ(wt_synth(&g, err), 0);
        run("test \"$(ls '%s' | tr '\\n' ' ')\" = '%s'", dg,
            "model-00001-of-00002.gguf model-00002-of-00002.gguf ");
        struct wt_model *gm = open_ok(dg);
        CHECK_EQ(wt_n_files(gm), 2);
        const struct wt_hparams *gh = wt_hparams(gm);
        CHECK_EQ(gh->hidden, hp->hidden);
        CHECK_EQ(gh->n_layers, hp->n_layers);
        CHECK_EQ(gh->vocab_size, hp->vocab_size);
        CHECK_EQ(gh->n_routed, hp->n_routed);
        CHECK_EQ(wt_get(gm, "blk.1.ffn_gate_exps.weight")->type, QTYPE_IQ1_M);
        CHECK_EQ(wt_get(gm, "blk.2.ffn_up_exps.weight")->type, QTYPE_IQ1_M);
        CHECK_EQ(wt_get(gm, "blk.1.ffn_down_exps.weight")->type, QTYPE_Q4_K);
        const char *lin[] = {"token_embd.weight", "output.weight", "blk.0.attn_q_a.weight",
                             "blk.0.ffn_down.weight", "blk.1.ffn_up_shexp.weight"};
        for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
            CHECK_EQ(wt_get(gm, lin[i])->type, QTYPE_Q5_K);
        const char *f32[] = {"blk.1.ffn_gate_inp.weight", "blk.0.attn_norm.weight",
                             "output_norm.weight", "blk.1.exp_probs_b.bias",
                             "blk.0.attn_k_b.weight"};
        for (size_t i = 0; i < sizeof f32 / sizeof f32[0]; i++)
            CHECK_EQ(wt_get(gm, f32[i])->type, QTYPE_F32);
        CHECK(wt_get(gm, "blk.0.attn_kv_b.weight") == NULL);
        wt_close(gm);
        /* types that cannot hold weights are refused, by name */
        g.linears_type = QTYPE_Q8_K;
        CHECK(wt_synth(&g, err) != 0);
        CHECK_CONTAINS(err, "linears type");
        g.linears_type = QTYPE_Q5_K;
        g.experts_down_type = QTYPE_F8_E4M3;
        CHECK(wt_synth(&g, err) != 0);
        CHECK_CONTAINS(err, "experts down type");
    }

    /* ---- dequant -> reopen (HF per-expert F32) */
    if (wt_convert_dequant(d1, d3, QTYPE_F32, 2, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct wt_model *dq = open_ok(d3);
    CHECK(wt_get(dq, "blk.1.ffn_up_exps.3.weight") != NULL); /* per expert now */
    CHECK(wt_get(dq, "blk.1.ffn_up_exps.weight") == NULL);
    t = wt_get(dq, "blk.0.attn_q_a.weight");
    CHECK(t->type == QTYPE_F32 && t->scale == NULL);
    CHECK_EQ(wt_expert(dq, 2, WT_GATE, 5, &v, err), 0);
    CHECK(v.type == QTYPE_F32);
    {
        struct wt_view q;
        CHECK_EQ(wt_expert(m, 2, WT_GATE, 5, &q, err), 0);
        /* q8_0 block: f16 scale + 32 int8 */
        const uint8_t *blk = q.data;
        uint16_t dh;
        memcpy(&dh, blk, 2);
        float want = fp_f16_to_f32(dh) * (float)(int8_t)blk[2 + 3];
        CHECK_NEAR(((const float *)v.data)[3], want, 0);
    }
    /* ---- quantize(dequant) == synth, byte for byte */
    if (wt_convert_quantize(d3, d4, QTYPE_Q8_0, 2, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct wt_model *qm = open_ok(d4);
    same_tensors(m, qm);
    wt_close(qm);
    wt_close(dq);

    /* ---- merge -> hybrid */
    if (wt_convert_merge(d1, NULL, d5, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct wt_model *hm = open_ok(d5);
    t = wt_getf(hm, "blk.%d.ffn_down_exps.weight", 1);
    CHECK(t && t->type == QTYPE_Q8_0 && t->ndim == 3);
    same_tensors(m, hm);
    wt_close(hm);
    /* the hybrid files describe themselves: no config.json needed */
    path(a, "merged/config.json");
    CHECK(unlink(a) == 0);
    hm = open_ok(d5);
    CHECK_EQ(wt_hparams(hm)->n_routed, 8);
    wt_close(hm);

    /* ---- KTransformers layout: GGUF names, FP8 + scale_inv, expert blobs + .ggml_type */
    CHECK(mkdir(d6, 0700) == 0);
    run("cp '%s/config.json' '%s/'", d1, d6);
    path(a, "kt/model.safetensors");
    struct sft_writer *w;
    CHECK_EQ(sft_writer_create(a, &w, err), 0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass) CHECK_EQ(sft_writer_begin(w, err), 0);
        for (int i = 0; i < wt_count(m); i++) {
            t = wt_at(m, i);
            if (wt_name_is_routed_expert(t->name)) {
                char tn[128];
                snprintf(tn, sizeof tn, "%.*s.ggml_type", (int)strlen(t->name) - 7, t->name);
                int64_t nb = (int64_t)t->nbytes, one = 1, ty = t->type;
                if (!pass) {
                    CHECK_EQ(sft_writer_add(w, t->name, QTYPE_U8, 1, &nb, err), 0);
                    CHECK_EQ(sft_writer_add(w, tn, QTYPE_I64, 1, &one, err), 0);
                } else {
                    CHECK_EQ(sft_writer_write(w, t->data, t->nbytes, err), 0);
                    CHECK_EQ(sft_writer_write(w, &ty, 8, err), 0);
                }
            } else if (!pass) {
                CHECK_EQ(sft_writer_add(w, t->name, t->type, t->ndim, t->shape, err), 0);
            } else {
                CHECK_EQ(sft_writer_write(w, t->data, t->nbytes, err), 0);
            }
        }
        if (!pass) { /* an MTP layer tensor: must be skipped */
            int64_t s = 256;
            CHECK_EQ(sft_writer_add(w, "blk.3.attn_norm.weight", QTYPE_F32, 1, &s, err), 0);
            CHECK_EQ(sft_writer_add(w, "blk.2.nextn.enorm.weight", QTYPE_F32, 1, &s, err), 0);
        } else {
            static float z[256];
            CHECK_EQ(sft_writer_write(w, z, sizeof z, err), 0);
            CHECK_EQ(sft_writer_write(w, z, sizeof z, err), 0);
        }
    }
    CHECK_EQ(sft_writer_finish(w, err), 0);
    sft_writer_destroy(w);
    struct wt_model *km = open_ok(d6);
    same_tensors(m, km);
    CHECK(wt_get(km, "blk.3.attn_norm.weight") == NULL);
    CHECK(wt_get(km, "blk.2.nextn.enorm.weight") == NULL);
    CHECK_EQ(wt_count(km), wt_count(m));
    wt_close(km);
    /* merge accepts the KTransformers layout as input */
    path(a, "merged-kt");
    if (wt_convert_merge(d6, NULL, a, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    km = open_ok(a);
    same_tensors(m, km);
    wt_close(km);
    /* KTransformers output without config.json: the error names the file to copy and where to;
     * a config.json in the directory above is used; the skipped MTP tensors are named once */
    path(a, "kt/config.json");
    CHECK(unlink(a) == 0);
    CHECK_EQ(wt_open(d6, &km, err), ERR_NOT_FOUND);
    CHECK_CONTAINS(err, "KTransformers");
    CHECK_CONTAINS(err, a);
    run("cp '%s/config.json' '%s/'", d1, root);
    km = open_ok(d6);
    same_tensors(m, km);
    CHECK_CONTAINS(wt_skipped(km), "2 MTP tensors");
    CHECK_CONTAINS(wt_skipped(km), "blk.3.*");
    CHECK_CONTAINS(wt_skipped(km), "blk.2.nextn.*");
    wt_close(km);
    path(a, "config.json");
    CHECK(unlink(a) == 0);
    CHECK_STR(wt_skipped(m), "");

    /* ---- hyperparameters from GGUF metadata alone (no config.json beside it) */
    path(a, "gguf-only");
    CHECK(mkdir(a, 0700) == 0);
    run("cp '%s/experts.gguf' '%s/'", d1, a);
    {
        struct wt_model *gm;
        CHECK_EQ(wt_open(a, &gm, err), 0);
        const struct wt_hparams *g = wt_hparams(gm);
        CHECK_EQ(g->hidden, hp->hidden);
        CHECK_EQ(g->n_layers, hp->n_layers);
        CHECK_EQ(g->q_lora_rank, hp->q_lora_rank);
        CHECK_EQ(g->kv_lora_rank, hp->kv_lora_rank);
        CHECK_EQ(g->qk_nope, hp->qk_nope);
        CHECK_EQ(g->qk_rope, hp->qk_rope);
        CHECK_EQ(g->v_head, hp->v_head);
        CHECK_EQ(g->n_routed, hp->n_routed);
        CHECK_EQ(g->n_group, hp->n_group);
        CHECK_EQ(g->topk_group, hp->topk_group);
        CHECK_EQ(g->top_k, hp->top_k);
        CHECK_EQ(g->first_k_dense, hp->first_k_dense);
        CHECK_EQ(g->vocab_size, hp->vocab_size);
        CHECK_EQ(g->norm_topk_prob, hp->norm_topk_prob);
        CHECK_EQ(g->yarn, 1);
        CHECK_NEAR(g->yarn_factor, hp->yarn_factor, 0);
        CHECK_NEAR(g->yarn_mscale_all_dim, hp->yarn_mscale_all_dim, 1e-6);
        CHECK_NEAR(g->routed_scale, hp->routed_scale, 0);
        CHECK(wt_validate(gm, err) != 0); /* only experts in there */
        CHECK_CONTAINS(err, "missing tensor");
        wt_close(gm);
    }

    /* ---- the FP8 + GGUF directory where the safetensors also hold per-expert FP8 experts:
     * GGUF's stacked experts win (the dequant dir has per-expert F32; add the GGUF) */
    dq = open_ok(d3);
    CHECK_EQ(wt_add_dir(dq, d1, err), 0);
    CHECK_EQ(wt_validate(dq, err), 0);
    CHECK_EQ(wt_expert(dq, 1, WT_UP, 2, &v, err), 0);
    CHECK_EQ(v.type, QTYPE_Q8_0);
    CHECK(wt_get(dq, "blk.1.ffn_up_exps.2.weight") == NULL);
    wt_close(dq);

    /* ---- errors */
    CHECK(mkdir(d7, 0700) == 0);
    run("cp '%s/config.json' '%s/'", d1, d7);
    path(a, "bad/model.safetensors");
    CHECK_EQ(sft_writer_create(a, &w, err), 0);
    int64_t s1 = 256;
    CHECK_EQ(sft_writer_add(w, "model.norm.weight", QTYPE_BF16, 1, &s1, err), 0);
    CHECK_EQ(sft_writer_begin(w, err), 0);
    static uint16_t zz[256];
    CHECK_EQ(sft_writer_write(w, zz, sizeof zz, err), 0);
    CHECK_EQ(sft_writer_finish(w, err), 0);
    sft_writer_destroy(w);
    expect_open_fail(d7, "missing tensor 'token_embd.weight'");
    /* wrong shape: hidden 512 in config */
    run("sed -i 's/\"hidden_size\": 256/\"hidden_size\": 512/' '%s/config.json' %s", d7, "");
    run("cp '%s/model.safetensors' '%s/'", d1, d7);
    expect_open_fail(d7, "config says");
    /* FP8 without its scale */
    run("cp '%s/config.json' '%s/'", d1, d7);
    path(a, "bad/model.safetensors");
    CHECK_EQ(sft_writer_create(a, &w, err), 0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass) CHECK_EQ(sft_writer_begin(w, err), 0);
        for (int i = 0; i < wt_count(m); i++) {
            t = wt_at(m, i);
            if (wt_name_is_routed_expert(t->name) ||
                !strcmp(t->name, "blk.1.attn_output.weight_scale_inv"))
                continue;
            char hf[128];
            CHECK_EQ(wt_hf_name(t->name, hf, sizeof hf), 0);
            if (!pass) CHECK_EQ(sft_writer_add(w, hf, t->type, t->ndim, t->shape, err), 0);
            else CHECK_EQ(sft_writer_write(w, t->data, t->nbytes, err), 0);
        }
    }
    CHECK_EQ(sft_writer_finish(w, err), 0);
    sft_writer_destroy(w);
    run("cp '%s/experts.gguf' '%s/'", d1, d7);
    expect_open_fail(d7, "blk.1.attn_output.weight' has no weight_scale_inv");
    /* incomplete split GGUF set */
    run("cp '%s/experts.gguf' '%s/x-00001-of-00002.gguf'", d1, d7);
    expect_open_fail(d7, "x-00002-of-00002.gguf is missing");
    /* a truncated GGUF: names the file */
    run("rm '%s/x-00001-of-00002.gguf'; truncate -s -100 '%s/experts.gguf'", d7, d7);
    expect_open_fail(d7, "experts.gguf");

    wt_close(m);
    run("rm -rf '%s' %s", root, "");
    printf("weights ok\n");
    return 0;
}
