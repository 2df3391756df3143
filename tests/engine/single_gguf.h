/* single_gguf.h - a test helper (header-only): an all-F32 model (`convert dequant` output) as
 * one GGUF file in llama.cpp's form, for the model tests.
 *
 * Canonical names, stacked routed experts, kv_b split into attn_k_b / attn_v_b, the
 * hyperparameters only in the deepseek2.* metadata (wt__gguf_meta), and the directory's
 * tokenizer (tokenizer.json or tiktoken.model, with tokenizer_config.json) as tokenizer.ggml.*
 * metadata the way synth's whole-GGUF layout writes it (wt__synth_tokenizer_gguf). Fails the
 * test (CHECK) on any error. Single-threaded; nothing is kept.
 */
#ifndef TANDEM_TEST_SINGLE_GGUF_H
#define TANDEM_TEST_SINGLE_GGUF_H

#include "tests/check.h"
#include "common/err.h"
#include "engine/weights/gguf.h"
#include "engine/weights/synth_internal.h"
#include "engine/weights/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Model d (all F32: `convert dequant` output) as one GGUF file in llama.cpp's form: canonical
 * names, stacked experts, kv_b split into attn_k_b / attn_v_b, the hyperparameters only in the
 * deepseek2.* metadata. */
static inline void write_single_gguf(const struct wt_model *d, const char *path)
{
    const struct wt_hparams *hp = wt_hparams(d);
    const int64_t H = hp->n_heads, L = hp->kv_lora_rank, N = hp->qk_nope, HR = N + hp->v_head;
    char err[ERR_LEN] = "", nm[WT_NAME_LEN];
    float *kv = malloc(sizeof *kv * (size_t)(H * HR * L)), *row = malloc(sizeof *row * (size_t)L);
    CHECK(kv && row);
    struct gguf_writer *w;
    CHECK_EQ(gguf_writer_create(path, &w, err), 0);
    CHECK_EQ(wt__gguf_meta(w, hp), 0);
    char tp[4096], tq[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", wt_dir(d));
    snprintf(tq, sizeof tq, "%s/tiktoken.model", wt_dir(d));
    if (access(tp, R_OK) == 0 || access(tq, R_OK) == 0) {
        int rc = wt__synth_tokenizer_gguf(w, wt_dir(d), hp->vocab_size, err);
        if (rc) fprintf(stderr, "%s: tokenizer: %s\n", wt_dir(d), err);
        CHECK_EQ(rc, 0);
    }
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

#endif
