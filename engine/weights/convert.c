/* convert.c - quantize (HF float -> FP8 + GGML experts), dequant (anything -> HF float) and
 * merge (FP8 + GGUF experts -> tandem hybrid safetensors). See convert.h for the layouts.
 *
 * quantize and dequant run the emitter (emit.c) with a fill callback that reads rows of the
 * source model through the weights index and dequantizes them to f32: F32/F16/BF16 directly,
 * FP8 times its 128x128 block scale, GGML types through the CPU kernels' to_float. merge copies
 * bytes unchanged: tensors keep their dtype; GGML-typed ones become U8 blobs described in
 * __metadata__. One output file per layer (plus one for the global tensors) keeps files a
 * manageable size for a 671B model.
 *
 * Threads: the calling thread plus the emitter's workers (which only read the mapped model).
 */
#include "convert.h"
#include "safetensors.h"
#include "synth_internal.h"
#include "weights_internal.h"
#include "engine/text/tmpl.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"

#include <jansson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fill_model(const struct wt__emitter *em, const struct wt__job *j, int64_t r0, int64_t n,
                      float *out, char *err)
{
    const struct wt_model *m = em->model;
    if (j->src == WT_SRC_TENSOR) {
        const struct wt_tensor *t = wt_get(m, j->canon);
        int kl = -1, end = 0;
        if (!t && sscanf(j->canon, "blk.%d.attn_kv_b.weight%n", &kl, &end) == 1 && !j->canon[end] &&
            j->cols == wt_hparams(m)->kv_lora_rank)
            return wt_kv_b_rows(m, kl, r0, n, out, err); /* from llama.cpp's split form */
        if (!t) return err_set(err, ERR_FORMAT, "%s: missing tensor '%s'", wt_dir(m), j->canon);
        int ok;
        int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
        size_t rb = qtype_row_bytes(t->type, cols, &ok);
        if (cols != j->cols)
            return err_set(err, ERR_FORMAT, "'%s': %lld columns, expected %lld", j->canon,
                           (long long)cols, (long long)j->cols);
        const float *sc = t->scale ? t->scale->data : NULL;
        for (int64_t i = 0; i < n; i++) {
            int rc = wt__row_f32(em->ops, t->type, cols, rb, t->data, sc, r0 + i, out + i * cols,
                                 t->name, err);
            if (rc) return rc;
        }
        return 0;
    }
    int64_t R = j->src == WT_SRC_STACKED ? j->shape[1] : j->rows;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = r0 + i;
        int e = j->src == WT_SRC_STACKED ? (int)(r / R) : j->expert;
        struct wt_view v;
        int rc = wt_expert(m, j->layer, (enum wt_proj)j->proj, e, &v, err);
        if (rc) return rc;
        if (v.cols != j->cols || v.rows != R)
            return err_set(err, ERR_FORMAT, "expert %d of layer %d: %lldx%lld, expected %lldx%lld",
                           e, j->layer, (long long)v.rows, (long long)v.cols, (long long)R,
                           (long long)j->cols);
        rc = wt__row_f32(em->ops, v.type, v.cols, v.row_bytes, v.data, v.scale, r % R,
                         out + i * j->cols, j->name, err);
        if (rc) return rc;
    }
    return 0;
}

/* ---- files ----------------------------------------------------------------------------------- */

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, char *err)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/%s", src_dir, name);
    snprintf(b, sizeof b, "%s/%s", dst_dir, name);
    FILE *in = fopen(a, "rb");
    if (!in) return 0; /* optional */
    FILE *out = fopen(b, "wb");
    if (!out) {
        fclose(in);
        return err_set(err, ERR_IO, "%s: %s", b, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) bad = 1;
    bad |= ferror(in);
    fclose(in);
    bad |= fclose(out) != 0;
    return bad ? err_set(err, ERR_IO, "copying %s to %s failed", a, b) : 0;
}

/* A tokenizer_config.json without a chat template (e.g. one written by a training script) gets
 * tandem's built-in DeepSeek-V3 Jinja, so the converted model serves chats without an option. */
static int fill_chat_template(const char *dst, char *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dst);
    json_error_t je;
    json_t *root = json_load_file(p, 0, &je);
    if (!root) return 0; /* absent: nothing to fill */
    int rc = 0;
    json_t *t = json_object_get(root, "chat_template");
    if (json_is_object(root) && !(json_is_string(t) && json_string_length(t) > 0) &&
        !json_is_array(t)) {
        json_object_set_new(root, "chat_template", json_string(tmpl_builtin_jinja("deepseek-v3")));
        if (json_dump_file(root, p, JSON_INDENT(2)))
            rc = err_set(err, ERR_IO, "%s: write failed", p);
    }
    json_decref(root);
    return rc;
}

static int copy_tokenizer(const char *src, const char *dst, char *err)
{
    static const char *names[] = {"tokenizer.json", "tiktoken.model", "tokenizer_config.json",
                                  "generation_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rc = copy_file(src, dst, names[i], err);
        if (rc) return rc;
    }
    return fill_chat_template(dst, err);
}

static int write_config(const struct wt_hparams *hp, int fp8, const char *dir, char *err)
{
    char *cfg = wt_hparams_to_json(hp, fp8);
    if (!cfg) return err_set(err, ERR_NOMEM, "out of memory");
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    int bad = !f || fputs(cfg, f) < 0;
    if (f) bad |= fclose(f) != 0;
    free(cfg);
    return bad ? err_set(err, ERR_IO, "%s: write failed", p) : 0;
}

static int open_model(const char *dir, const char *extra, struct wt_model **m,
                      const struct cpuq_ops **ops, char *err)
{
    int rc = wt_open(dir, m, err);
    if (!rc && extra) rc = wt_add_dir(*m, extra, err);
    if (!rc) rc = wt_validate(*m, err);
    if (!rc && ops) rc = cpuq_ops_get(cpuq_isa_detect(), ops, err);
    if (rc) {
        wt_close(*m);
        *m = NULL;
    }
    return rc;
}

/* ---- quantize -------------------------------------------------------------------------------- */

int wt_convert_quantize(const char *model_dir, const char *out, int experts_type, int threads,
                        char *err)
{
    struct wt_model *m;
    const struct cpuq_ops *ops;
    int rc = open_model(model_dir, NULL, &m, &ops, err);
    if (rc) return rc;
    int gtype = experts_type >= 0 ? experts_type : QTYPE_Q4_K;
    struct wt__emitter em = {ops, threads, 0, 0, m, wt_hparams(m), fill_model};
    /* kv_b_proj whatever the source's MLA layout */
    struct wt__layout lay = {.experts_type = gtype, .experts_down = -1, .gguf_split = 1};
    rc = wt__mkdirs(out, err);
    if (!rc) rc = wt__write_model(&em, wt_hparams(m), &lay, out, err);
    if (!rc) rc = copy_tokenizer(wt_dir(m), out, err);
    wt_close(m);
    return rc;
}

/* ---- dequant --------------------------------------------------------------------------------- */

int wt_convert_dequant(const char *model_dir, const char *out, int type, int threads, char *err)
{
    struct wt_model *m;
    const struct cpuq_ops *ops;
    int rc = open_model(model_dir, NULL, &m, &ops, err);
    if (rc) return rc;
    const struct wt_hparams *hp = wt_hparams(m);
    int fmt = type == QTYPE_BF16 ? WT_FMT_BF16 : WT_FMT_F32;
    struct wt__job *jobs = NULL;
    int n = 0, cap = 0;
    for (int i = 0; !rc && i < wt_count(m); i++) {
        const struct wt_tensor *t = wt_at(m, i);
        size_t l = strlen(t->name);
        if (l > 10 && !strcmp(t->name + l - 10, "_scale_inv")) continue;
        int kl = -1, end = 0; /* llama.cpp's split kv_b: written as kv_b_proj, from k_b's entry */
        if (sscanf(t->name, "blk.%d.attn_v_b.weight%n", &kl, &end) == 1 && !t->name[end]) continue;
        if (!(sscanf(t->name, "blk.%d.attn_k_b.weight%n", &kl, &end) == 1 && !t->name[end]) ||
            !wt_kv_b_split(m, kl))
            kl = -1;
        int stacked = wt_name_is_routed_expert(t->name) && t->ndim == 3;
        int count = stacked ? (int)t->shape[0] : 1;
        for (int e = 0; e < count; e++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                struct wt__job *v = realloc(jobs, sizeof *v * (size_t)cap);
                if (!v) {
                    rc = err_set(err, ERR_NOMEM, "out of memory");
                    break;
                }
                jobs = v;
            }
            struct wt__job *j = &jobs[n];
            memset(j, 0, sizeof *j);
            snprintf(j->canon, sizeof j->canon, "%s", t->name);
            j->src = WT_SRC_TENSOR;
            j->layer = j->proj = j->expert = -1;
            j->fmt = fmt;
            if (stacked) {
                int layer = -1;
                sscanf(t->name, "blk.%d.", &layer);
                const char *pn = strstr(t->name, "ffn_") + 4;
                j->proj = !strncmp(pn, "gate", 4) ? WT_GATE
                          : !strncmp(pn, "up", 2) ? WT_UP
                                                  : WT_DOWN;
                j->layer = layer;
                j->expert = e;
                j->src = WT_SRC_EXPERT;
                j->ndim = 2;
                j->shape[0] = t->shape[1];
                j->shape[1] = t->shape[2];
                char c[WT_NAME_LEN];
                snprintf(c, sizeof c, "blk.%d.ffn_%s_exps.%d.weight", layer, wt_proj_name(j->proj),
                         e);
                if (wt_hf_name(c, j->name, sizeof j->name)) continue;
            } else {
                int pl = -1, pe = -1;
                char pn[16] = "";
                if (sscanf(t->name, "blk.%d.ffn_%15[a-z]_exps.%d.weight", &pl, pn, &pe) == 3) {
                    j->src = WT_SRC_EXPERT; /* per-expert source: through wt_expert (FP8 scale) */
                    j->layer = pl;
                    j->proj = !strcmp(pn, "gate") ? WT_GATE : !strcmp(pn, "up") ? WT_UP : WT_DOWN;
                    j->expert = pe;
                }
                j->ndim = t->ndim;
                for (int d = 0; d < t->ndim && d < 3; d++) j->shape[d] = t->shape[d];
                if (kl >= 0) {
                    snprintf(j->canon, sizeof j->canon, "blk.%d.attn_kv_b.weight", kl);
                    j->ndim = 2;
                    j->shape[0] = (int64_t)hp->n_heads * (hp->qk_nope + hp->v_head);
                    j->shape[1] = hp->kv_lora_rank;
                }
                if (j->ndim > 3 || wt_hf_name(j->canon, j->name, sizeof j->name)) continue;
                if (strstr(t->name, "exp_probs_b"))
                    j->fmt = WT_FMT_F32; /* HF keeps the correction bias in fp32 */
            }
            j->cols = j->ndim ? j->shape[j->ndim - 1] : 1;
            j->rows = 1;
            for (int d = 0; d < j->ndim - 1; d++) j->rows *= j->shape[d];
            if (j->ndim == 0) j->ndim = 1, j->shape[0] = 1;
            n++;
        }
    }
    struct sft_writer *w = NULL;
    char p[4096];
    if (!rc) rc = wt__mkdirs(out, err);
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    if (!rc) rc = sft_writer_create(p, &w, err);
    if (!rc) rc = sft_writer_meta(w, "format", "pt", err);
    for (int i = 0; !rc && i < n; i++) rc = wt__job_declare_sft(w, &jobs[i], err);
    if (!rc) rc = sft_writer_begin(w, err);
    struct wt__emitter em = {ops, threads, 0, 0, m, hp, fill_model};
    for (int i = 0; !rc && i < n; i++) rc = wt__emit(&em, &jobs[i], w, NULL, err);
    if (!rc) rc = sft_writer_finish(w, err);
    sft_writer_destroy(w);
    if (!rc) rc = write_config(hp, 0, out, err);
    if (!rc) rc = copy_tokenizer(wt_dir(m), out, err);
    free(jobs);
    wt_close(m);
    return rc;
}

/* ---- merge ----------------------------------------------------------------------------------- */

static int write_group(const struct wt_model *m, const char *out, int group, const char *cfg,
                       char *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/model-%05d.safetensors", out, group);
    struct sft_writer *w;
    int rc = sft_writer_create(p, &w, err);
    if (rc) return rc;
    rc = sft_writer_meta(w, "tandem.format", "hybrid", err);
    if (!rc) rc = sft_writer_meta(w, "tandem.format_version", "1", err);
    if (!rc && cfg) rc = sft_writer_meta(w, "tandem.config", cfg, err);
    int any = 0;
    for (int pass = 0; !rc && pass < 2; pass++) {
        if (pass == 1) rc = sft_writer_begin(w, err);
        for (int i = 0; !rc && i < wt_count(m); i++) {
            const struct wt_tensor *t = wt_at(m, i);
            int layer = -1;
            if (sscanf(t->name, "blk.%d.", &layer) != 1) layer = -1;
            if (layer + 1 != group) continue;
            any = 1;
            if (pass == 1) {
                rc = sft_writer_write(w, t->data, t->nbytes, err);
                continue;
            }
            if (sft_dtype_name(t->type) && !qtype_traits(t->type)->is_quant) {
                rc = sft_writer_add(w, t->name, t->type, t->ndim, t->shape, err);
                continue;
            }
            char k[WT_NAME_LEN + 32], v[128] = "";
            snprintf(k, sizeof k, "tandem.ggml_type.%s", t->name);
            rc = sft_writer_meta(w, k, qtype_name(t->type), err);
            for (int d = 0; d < t->ndim; d++)
                snprintf(v + strlen(v), sizeof v - strlen(v), "%s%lld", d ? "," : "",
                         (long long)t->shape[d]);
            snprintf(k, sizeof k, "tandem.shape.%s", t->name);
            if (!rc) rc = sft_writer_meta(w, k, v, err);
            int64_t nb = (int64_t)t->nbytes;
            if (!rc) rc = sft_writer_add(w, t->name, QTYPE_U8, 1, &nb, err);
        }
    }
    if (!rc && !any && group > 0) { /* nothing in this layer: no file */
        sft_writer_destroy(w);
        return 0;
    }
    if (!rc) rc = sft_writer_finish(w, err);
    sft_writer_destroy(w);
    return rc;
}

int wt_convert_merge(const char *fp8_dir, const char *gguf_dir, const char *out, char *err)
{
    struct wt_model *m;
    int rc = open_model(fp8_dir, gguf_dir, &m, NULL, err);
    if (rc) return rc;
    const struct wt_hparams *hp = wt_hparams(m);
    char *cfg = wt_hparams_to_json(hp, 1);
    rc = cfg ? wt__mkdirs(out, err) : err_set(err, ERR_NOMEM, "out of memory");
    for (int g = 0; !rc && g <= hp->n_layers; g++)
        rc = write_group(m, out, g, g == 0 ? cfg : NULL, err);
    if (!rc) rc = write_config(hp, 1, out, err);
    if (!rc) rc = copy_tokenizer(wt_dir(m), out, err);
    free(cfg);
    wt_close(m);
    return rc;
}
