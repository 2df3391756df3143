/* emit.c - the tensor emitter shared by synth, quantize and dequant (see synth_internal.h).
 *
 * A job's rows are cut into blocks of 128 rows (one row of FP8 scales). Blocks are processed in
 * batches of 4 x threads: worker threads claim blocks with an atomic counter, fill them as f32
 * and convert them into the batch's slot buffers; then the calling thread writes the slots in
 * order. Memory: per thread 128 x cols floats, per slot 128 rows of output bytes; never a whole
 * tensor (FP8 scales, a few KB, are the exception). Output bytes depend only on the data, not on
 * the thread count or timing: each block is converted independently.
 *
 * wt__plan lists the tensors of tandem's no-merge layout for a set of hyperparameters, in file
 * order (with mla_split, kv_b goes to the GGUF as llama.cpp's attn_k_b / attn_v_b; with
 * gguf_only every tensor goes to the GGUF, llama.cpp's whole-model form);
 * wt__write_model writes the layout's weight files (the GGUF as one file or a gguf-split set)
 * and config.json (not with gguf_only: the GGUF metadata says it all).
 *
 * Threads: called from one thread; spawns and joins its own workers per batch.
 */
#include "convert.h"
#include "synth_internal.h"
#include "gguf.h"
#include "safetensors.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK_ROWS 128

int wt__nthreads(int threads)
{
    if (threads > 0) return threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 256 ? 256 : n) : 1;
}

int wt__mkdirs(const char *dir, char *err)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return err_set(err, ERR_INVAL, "path too long");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return err_set(err, ERR_IO, "%s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return err_set(err, ERR_IO, "%s: %s", p, strerror(errno));
    return 0;
}

static int out_type(const struct wt__job *j)
{
    switch (j->fmt) {
    case WT_FMT_BF16: return QTYPE_BF16;
    case WT_FMT_F32: return QTYPE_F32;
    case WT_FMT_FP8: return QTYPE_F8_E4M3;
    default: return j->gtype;
    }
}

static size_t row_bytes(const struct wt__job *j)
{
    int ok;
    return qtype_row_bytes(out_type(j), j->cols, &ok);
}

size_t wt__job_bytes(const struct wt__job *j) { return row_bytes(j) * (size_t)j->rows; }

static int64_t scale_cols(const struct wt__job *j) { return (j->cols + 127) / 128; }
static int64_t n_blocks(const struct wt__job *j) { return (j->rows + BLOCK_ROWS - 1) / BLOCK_ROWS; }

int wt__job_declare_sft(struct sft_writer *w, const struct wt__job *j, char *err)
{
    int rc = sft_writer_add(w, j->name, out_type(j), j->ndim, j->shape, err);
    if (rc || j->fmt != WT_FMT_FP8) return rc;
    char sn[WT_NAME_LEN + 16];
    snprintf(sn, sizeof sn, "%s_scale_inv", j->name);
    int64_t ss[2] = {n_blocks(j), scale_cols(j)};
    return sft_writer_add(w, sn, QTYPE_F32, 2, ss, err);
}

int wt__job_declare_gguf(struct gguf_writer *w, const struct wt__job *j, char *err)
{
    int64_t ne[3];
    for (int d = 0; d < j->ndim; d++) ne[d] = j->shape[j->ndim - 1 - d];
    return gguf_writer_add_tensor(w, j->name, out_type(j), j->ndim, ne, err);
}

struct batch {
    const struct wt__emitter *em;
    const struct wt__job *j;
    int64_t b0, b1; /* blocks of this batch */
    atomic_llong next;
    uint8_t **slot; /* per block of the batch: output bytes */
    float *scales;  /* FP8: [n_blocks][scale_cols] */
    pthread_mutex_t mu;
    int rc;
    char err[ERR_LEN];
};

void wt__fp8_block(const float *x, int64_t nr, int64_t C, uint8_t *q, float *scales)
{
    for (int64_t cb = 0; cb * 128 < C; cb++) {
        int64_t c0 = cb * 128, c1 = c0 + 128 < C ? c0 + 128 : C;
        float amax = 0;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = c0; c < c1; c++) {
                float a = fabsf(x[r * C + c]);
                if (a > amax) amax = a;
            }
        float s = amax > 0 ? amax / 448.0f : 1.0f;
        float inv = 1.0f / s;
        scales[cb] = s;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = c0; c < c1; c++) q[r * C + c] = fp_f32_to_e4m3(x[r * C + c] * inv);
    }
}

static void convert_block(const struct wt__emitter *em, const struct wt__job *j, int64_t blk,
                          int64_t nr, float *x, uint8_t *out, float *scales)
{
    int64_t C = j->cols;
    size_t rb = row_bytes(j);
    switch (j->fmt) {
    case WT_FMT_F32: memcpy(out, x, (size_t)(nr * C) * 4); break;
    case WT_FMT_BF16:
        for (int64_t i = 0; i < nr * C; i++) {
            uint16_t h = fp_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case WT_FMT_FP8: wt__fp8_block(x, nr, C, out, scales + blk * scale_cols(j)); break;
    default:
        for (int64_t r = 0; r < nr; r++)
            em->ops->type[j->gtype].from_float(x + r * C, out + (size_t)r * rb, C);
        break;
    }
}

struct wargs {
    struct batch *b;
    float *x; /* this worker's 128 x cols scratch */
};

static void *worker(void *arg)
{
    struct wargs *a = arg;
    struct batch *b = a->b;
    for (;;) {
        long long blk = atomic_fetch_add(&b->next, 1);
        if (blk >= b->b1) break;
        int64_t r0 = blk * BLOCK_ROWS;
        int64_t nr = b->j->rows - r0 < BLOCK_ROWS ? b->j->rows - r0 : BLOCK_ROWS;
        char err[ERR_LEN] = "";
        int rc = b->em->fill(b->em, b->j, r0, nr, a->x, err);
        if (rc) {
            pthread_mutex_lock(&b->mu);
            if (!b->rc) {
                b->rc = rc;
                memcpy(b->err, err, ERR_LEN);
            }
            pthread_mutex_unlock(&b->mu);
            break;
        }
        convert_block(b->em, b->j, blk, nr, a->x, b->slot[blk - b->b0], b->scales);
    }
    return NULL;
}

static int sink(struct sft_writer *sw, struct gguf_writer *gw, const void *p, size_t n, char *err)
{
    if (sw) return p ? sft_writer_write(sw, p, n, err) : sft_writer_skip(sw, n, err);
    return p ? gguf_writer_write(gw, p, n, err) : gguf_writer_skip(gw, n, err);
}

/* what decides routing when everything else is zero (the hidden state is then the embedding row,
 * normalized, times the router), and lm_head, so generated tokens vary (a served timing model
 * streams real text) */
static int routing_input(const char *name)
{
    static const char *keep[] = {"embed_tokens",    "token_embd",   "norm.weight",
                                 "mlp.gate.weight", "ffn_gate_inp", "e_score_correction_bias",
                                 "exp_probs_b",     "lm_head"};
    if (!strcmp(name, "output.weight")) return 1; /* not blk.N.attn_output.weight */
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (strstr(name, keep[i])) return 1;
    return 0;
}

int wt__emit(const struct wt__emitter *em, const struct wt__job *j, struct sft_writer *sw,
             struct gguf_writer *gw, char *err)
{
    int64_t nb = n_blocks(j), ncb = scale_cols(j);
    size_t rb = row_bytes(j);
    int rc;
    if (j->fmt == WT_FMT_GGML && (!em->ops || !em->ops->type[j->gtype].from_float))
        return err_set(err, ERR_UNSUPPORTED, "%s: no quantizer for %s", j->name,
                       qtype_name(j->gtype));
    if (em->zero && !(em->zero == 2 && routing_input(j->name))) {
        rc = sink(sw, gw, NULL, wt__job_bytes(j), err);
        if (!rc && j->fmt == WT_FMT_FP8) rc = sink(sw, gw, NULL, (size_t)(nb * ncb) * 4, err);
        return rc;
    }
    int nt = wt__nthreads(em->threads);
    if (nt > nb) nt = (int)nb;
    if (nt < 1) nt = 1;
    int64_t per = (int64_t)nt * 4;
    struct batch b;
    memset(&b, 0, sizeof b);
    b.em = em;
    b.j = j;
    pthread_mutex_init(&b.mu, NULL);
    b.slot = calloc((size_t)per, sizeof *b.slot);
    struct wargs *wa = calloc((size_t)nt, sizeof *wa);
    b.scales = j->fmt == WT_FMT_FP8 ? calloc((size_t)(nb * ncb), sizeof(float)) : NULL;
    rc = (!b.slot || !wa || (j->fmt == WT_FMT_FP8 && !b.scales)) ? ERR_NOMEM : 0;
    for (int64_t i = 0; !rc && i < per; i++)
        if (!(b.slot[i] = malloc(rb * BLOCK_ROWS))) rc = ERR_NOMEM;
    for (int t = 0; !rc && t < nt; t++) {
        wa[t].b = &b;
        if (!(wa[t].x = malloc(sizeof(float) * (size_t)j->cols * BLOCK_ROWS))) rc = ERR_NOMEM;
    }
    if (rc) rc = err_set(err, ERR_NOMEM, "%s: out of memory for conversion buffers", j->name);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    if (!rc && !th) rc = err_set(err, ERR_NOMEM, "out of memory");
    for (int64_t b0 = 0; !rc && b0 < nb; b0 += per) {
        b.b0 = b0;
        b.b1 = b0 + per < nb ? b0 + per : nb;
        atomic_store(&b.next, b0);
        int started = 0;
        for (int t = 0; t < nt; t++) {
            if (nt == 1 || pthread_create(&th[t], NULL, worker, &wa[t]) != 0) break;
            started++;
        }
        if (started == 0) worker(&wa[0]); /* one thread, or none could start: do it here */
        for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
        if (b.rc) {
            rc = b.rc;
            memcpy(err, b.err, ERR_LEN);
            break;
        }
        for (int64_t blk = b.b0; !rc && blk < b.b1; blk++) {
            int64_t nr =
                j->rows - blk * BLOCK_ROWS < BLOCK_ROWS ? j->rows - blk * BLOCK_ROWS : BLOCK_ROWS;
            rc = sink(sw, gw, b.slot[blk - b.b0], rb * (size_t)nr, err);
        }
    }
    if (!rc && j->fmt == WT_FMT_FP8) rc = sink(sw, gw, b.scales, (size_t)(nb * ncb) * 4, err);
    free(th);
    if (b.slot)
        for (int64_t i = 0; i < per; i++) free(b.slot[i]);
    if (wa)
        for (int t = 0; t < nt; t++) free(wa[t].x);
    free(b.slot);
    free(wa);
    free(b.scales);
    pthread_mutex_destroy(&b.mu);
    return rc;
}

/* ---- the no-merge layout --------------------------------------------------------------------- */

struct plan {
    struct wt__job *v;
    int n, cap;
    int rc;
};

static struct wt__job *add(struct plan *p, const char *hf, const char *canon, int fmt, int ndim,
                           int64_t a, int64_t b, int64_t c, int init, float std)
{
    if (p->rc) return NULL;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        struct wt__job *v = realloc(p->v, sizeof *v * (size_t)cap);
        if (!v) {
            p->rc = ERR_NOMEM;
            return NULL;
        }
        p->v = v;
        p->cap = cap;
    }
    struct wt__job *j = &p->v[p->n++];
    memset(j, 0, sizeof *j);
    snprintf(j->name, sizeof j->name, "%s", hf);
    snprintf(j->canon, sizeof j->canon, "%s", canon);
    j->fmt = fmt;
    j->ndim = ndim;
    j->shape[0] = a;
    j->shape[1] = b;
    j->shape[2] = c;
    j->cols = j->shape[ndim - 1];
    j->rows = 1;
    for (int d = 0; d < ndim - 1; d++) j->rows *= j->shape[d];
    j->init = init;
    j->std = std;
    j->src = WT_SRC_TENSOR;
    j->layer = j->proj = j->expert = -1;
    return j;
}

/* a linear [out, in]: FP8 on the GPU side */
static void lin(struct plan *p, int l, const char *hf, const char *canon, int64_t out, int64_t in)
{
    char h[WT_NAME_LEN], c[WT_NAME_LEN];
    snprintf(h, sizeof h, "model.layers.%d.%s.weight", l, hf);
    snprintf(c, sizeof c, "blk.%d.%s.weight", l, canon);
    add(p, h, c, WT_FMT_FP8, 2, out, in, 0, WT_INIT_NORMAL, 1.0f / sqrtf((float)in));
}

static void vec(struct plan *p, int l, const char *hf, const char *canon, int64_t n)
{
    char h[WT_NAME_LEN], c[WT_NAME_LEN];
    snprintf(h, sizeof h, "model.layers.%d.%s.weight", l, hf);
    snprintf(c, sizeof c, "blk.%d.%s.weight", l, canon);
    add(p, h, c, WT_FMT_BF16, 1, n, 0, 0, WT_INIT_NORM, 0.1f);
}

/* llama.cpp's split kv_b of layer l, F32 in the GGUF (values: see WT_INIT_K_B) */
static void mla_split(struct plan *q, const struct wt_hparams *hp, int l)
{
    char n[WT_NAME_LEN];
    int64_t H = hp->n_heads, L = hp->kv_lora_rank;
    snprintf(n, sizeof n, "blk.%d.attn_k_b.weight", l);
    struct wt__job *k = add(q, n, n, WT_FMT_F32, 3, H, L, hp->qk_nope, WT_INIT_K_B, 0);
    if (k) k->layer = l;
    snprintf(n, sizeof n, "blk.%d.attn_v_b.weight", l);
    struct wt__job *v = add(q, n, n, WT_FMT_F32, 3, H, hp->v_head, L, WT_INIT_V_B, 0);
    if (v) v->layer = l;
}

/* llama.cpp's whole-model GGUF from the no-merge plan: the safetensors jobs p move in front of
 * the GGUF jobs q under their canonical names; FP8 linears and 2-D BF16 weights (embedding,
 * lm_head) become GGML `linears`, the router and 1-D BF16 weights F32. */
static void to_gguf_only(struct plan *p, struct plan *q, int linears)
{
    struct wt__job *v = malloc(sizeof *v * (size_t)(p->n + q->n + 1));
    if (!v) {
        p->rc = ERR_NOMEM;
        return;
    }
    for (int i = 0; i < p->n; i++) {
        struct wt__job *j = &v[i];
        *j = p->v[i];
        snprintf(j->name, sizeof j->name, "%s", j->canon);
        if (j->fmt == WT_FMT_FP8 ||
            (j->fmt == WT_FMT_BF16 && j->ndim == 2 && !strstr(j->name, "ffn_gate_inp"))) {
            j->fmt = WT_FMT_GGML;
            j->gtype = linears;
        } else if (j->fmt == WT_FMT_BF16) {
            j->fmt = WT_FMT_F32;
        }
    }
    if (q->n) memcpy(v + p->n, q->v, sizeof *v * (size_t)q->n);
    free(q->v);
    q->v = v;
    q->n += p->n;
    q->cap = q->n;
    p->n = 0;
}

int wt__plan(const struct wt_hparams *hp, const struct wt__layout *lay, struct wt__job **st,
             int *n_st, struct wt__job **gg, int *n_gg, char *err)
{
    int gtype = lay->experts_type;
    struct plan p = {0}, q = {0};
    int64_t D = hp->hidden, H = hp->n_heads, V = hp->vocab_size, E = hp->n_routed;
    int64_t qk = hp->qk_nope + hp->qk_rope, Im = hp->moe_inter, Is = (int64_t)hp->n_shared * Im;
    add(&p, "model.embed_tokens.weight", "token_embd.weight", WT_FMT_BF16, 2, V, D, 0,
        WT_INIT_NORMAL, 1.0f);
    for (int l = 0; l < hp->n_layers; l++) {
        vec(&p, l, "input_layernorm", "attn_norm", D);
        if (hp->q_lora_rank) {
            lin(&p, l, "self_attn.q_a_proj", "attn_q_a", hp->q_lora_rank, D);
            vec(&p, l, "self_attn.q_a_layernorm", "attn_q_a_norm", hp->q_lora_rank);
            lin(&p, l, "self_attn.q_b_proj", "attn_q_b", H * qk, hp->q_lora_rank);
        } else {
            lin(&p, l, "self_attn.q_proj", "attn_q", H * qk, D);
        }
        lin(&p, l, "self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa", hp->kv_lora_rank + hp->qk_rope,
            D);
        vec(&p, l, "self_attn.kv_a_layernorm", "attn_kv_a_norm", hp->kv_lora_rank);
        if (lay->mla_split) mla_split(&q, hp, l);
        else
            lin(&p, l, "self_attn.kv_b_proj", "attn_kv_b", H * (hp->qk_nope + hp->v_head),
                hp->kv_lora_rank);
        lin(&p, l, "self_attn.o_proj", "attn_output", D, H * hp->v_head);
        vec(&p, l, "post_attention_layernorm", "ffn_norm", D);
        if (!wt_layer_is_moe(hp, l)) {
            lin(&p, l, "mlp.gate_proj", "ffn_gate", hp->inter, D);
            lin(&p, l, "mlp.up_proj", "ffn_up", hp->inter, D);
            lin(&p, l, "mlp.down_proj", "ffn_down", D, hp->inter);
            continue;
        }
        char h[WT_NAME_LEN], c[WT_NAME_LEN];
        snprintf(h, sizeof h, "model.layers.%d.mlp.gate.weight", l);
        snprintf(c, sizeof c, "blk.%d.ffn_gate_inp.weight", l);
        add(&p, h, c, WT_FMT_BF16, 2, E, D, 0, WT_INIT_NORMAL, 1.0f / sqrtf((float)D));
        if (hp->scoring == WT_SCORE_SIGMOID) {
            snprintf(h, sizeof h, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
            snprintf(c, sizeof c, "blk.%d.exp_probs_b.bias", l);
            add(&p, h, c, WT_FMT_F32, 1, E, 0, 0, WT_INIT_BIAS, 0.02f);
        }
        if (Is) {
            lin(&p, l, "mlp.shared_experts.gate_proj", "ffn_gate_shexp", Is, D);
            lin(&p, l, "mlp.shared_experts.up_proj", "ffn_up_shexp", Is, D);
            lin(&p, l, "mlp.shared_experts.down_proj", "ffn_down_shexp", D, Is);
        }
        for (int k = 0; k < 3; k++) {
            char n[WT_NAME_LEN];
            snprintf(n, sizeof n, "blk.%d.ffn_%s_exps.weight", l, wt_proj_name(k));
            int64_t r = k == 2 ? D : Im, cc = k == 2 ? Im : D;
            struct wt__job *j =
                add(&q, n, n, WT_FMT_GGML, 3, E, r, cc, WT_INIT_NORMAL, 1.0f / sqrtf((float)cc));
            if (j) {
                j->gtype = gtype == WT_EXPERTS_Q4_K_M ? (k == 2 ? QTYPE_Q6_K : QTYPE_Q4_K) : gtype;
                if (k == 2 && lay->experts_down >= 0) j->gtype = lay->experts_down;
                j->src = WT_SRC_STACKED;
                j->layer = l;
                j->proj = k;
            }
        }
    }
    add(&p, "model.norm.weight", "output_norm.weight", WT_FMT_BF16, 1, D, 0, 0, WT_INIT_NORM, 0.1f);
    add(&p, "lm_head.weight", "output.weight", WT_FMT_BF16, 2, V, D, 0, WT_INIT_NORMAL,
        1.0f / sqrtf((float)D));
    if (!p.rc && !q.rc && lay->gguf_only) to_gguf_only(&p, &q, lay->linears);
    if (p.rc || q.rc) {
        free(p.v);
        free(q.v);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    *st = p.v;
    *n_st = p.n;
    *gg = q.v;
    *n_gg = q.n;
    return 0;
}

int wt__gguf_meta(struct gguf_writer *w, const struct wt_hparams *hp)
{
    const char *a = "deepseek2";
    char k[128];
    int rc = gguf_writer_set_str(w, "general.architecture", a);
    if (!rc) rc = gguf_writer_set_str(w, "general.name", "tandem routed experts");
#define U32(key, v)                                                                                \
    if (!rc) {                                                                                     \
        snprintf(k, sizeof k, "%s.%s", a, key);                                                    \
        rc = gguf_writer_set_u32(w, k, (uint32_t)(v));                                             \
    }
#define F32(key, v)                                                                                \
    if (!rc) {                                                                                     \
        snprintf(k, sizeof k, "%s.%s", a, key);                                                    \
        rc = gguf_writer_set_f32(w, k, (float)(v));                                                \
    }
    U32("block_count", hp->n_layers);
    U32("context_length", hp->max_pos);
    U32("embedding_length", hp->hidden);
    U32("feed_forward_length", hp->inter);
    U32("attention.head_count", hp->n_heads);
    U32("attention.head_count_kv", hp->n_heads);
    F32("rope.freq_base", hp->rope_theta);
    F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    U32("expert_used_count", hp->top_k);
    U32("leading_dense_block_count", hp->first_k_dense);
    U32("vocab_size", hp->vocab_size);
    if (hp->q_lora_rank) U32("attention.q_lora_rank", hp->q_lora_rank);
    U32("attention.kv_lora_rank", hp->kv_lora_rank);
    U32("attention.key_length", hp->qk_nope + hp->qk_rope);
    U32("attention.value_length", hp->v_head);
    U32("expert_feed_forward_length", hp->moe_inter);
    U32("expert_count", hp->n_routed);
    U32("expert_shared_count", hp->n_shared);
    F32("expert_weights_scale", hp->routed_scale);
    U32("expert_gating_func", hp->scoring == WT_SCORE_SIGMOID ? 2 : 1);
    U32("expert_group_count", hp->n_group);
    U32("expert_group_used_count", hp->topk_group);
    U32("rope.dimension_count", hp->qk_rope);
    if (!rc) {
        snprintf(k, sizeof k, "%s.expert_weights_norm", a);
        rc = gguf_writer_set_bool(w, k, hp->norm_topk_prob);
    }
    if (hp->yarn) {
        if (!rc) {
            snprintf(k, sizeof k, "%s.rope.scaling.type", a);
            rc = gguf_writer_set_str(w, k, "yarn");
        }
        F32("rope.scaling.factor", hp->yarn_factor);
        U32("rope.scaling.original_context_length", hp->yarn_orig_ctx);
        F32("rope.scaling.yarn_log_multiplier", 0.1f * hp->yarn_mscale_all_dim);
        F32("rope.scaling.yarn_beta_fast", hp->yarn_beta_fast);
        F32("rope.scaling.yarn_beta_slow", hp->yarn_beta_slow);
    }
#undef U32
#undef F32
    if (!rc) rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)hp->bos_id);
    if (!rc) rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)hp->eos_id);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text, char *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return err_set(err, ERR_IO, "%s: %s", p, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    return bad ? err_set(err, ERR_IO, "%s: write failed", p) : 0;
}

/* one GGUF file of jobs gg[0..n): shard no of ns (llama.cpp's gguf-split keys when ns > 1;
 * the model metadata, and the tokenizer of tok_dir when given, in the first file only, as
 * gguf-split writes it) */
static int write_gguf(const struct wt__emitter *em, const struct wt_hparams *hp,
                      const struct wt__job *gg, int n, int no, int ns, int total, const char *path,
                      const char *tok_dir, char *err)
{
    struct gguf_writer *gw = NULL;
    int rc = gguf_writer_create(path, &gw, err);
    int meta = 0;
    if (!rc && no == 0) meta = wt__gguf_meta(gw, hp);
    if (!rc && ns > 1 && !meta)
        meta = gguf_writer_set_u16(gw, "split.no", (uint16_t)no) ||
               gguf_writer_set_u16(gw, "split.count", (uint16_t)ns) ||
               gguf_writer_set_i32(gw, "split.tensors.count", total);
    if (!rc && meta) rc = err_set(err, ERR_NOMEM, "out of memory");
    if (!rc && no == 0 && tok_dir) rc = wt__synth_tokenizer_gguf(gw, tok_dir, hp->vocab_size, err);
    for (int i = 0; !rc && i < n; i++) rc = wt__job_declare_gguf(gw, &gg[i], err);
    if (!rc) rc = gguf_writer_begin(gw, err);
    for (int i = 0; !rc && i < n; i++) {
        rc = wt__emit(em, &gg[i], NULL, gw, err);
        if (!rc && wt__job_bytes(&gg[i]) >= (64u << 20))
            LOG_INFO("convert", "%s: %s %s", gg[i].name,
                     qtype_name(gg[i].fmt == WT_FMT_GGML ? gg[i].gtype : QTYPE_F32),
                     em->zero ? "zeros" : "done");
    }
    if (!rc) rc = gguf_writer_finish(gw, err);
    gguf_writer_destroy(gw);
    return rc;
}

/* the no-merge layout's config.json, generation_config.json and model.safetensors (jobs st) */
static int write_sft_side(const struct wt__emitter *em, const struct wt_hparams *hp,
                          const struct wt__job *st, int n_st, const char *dir, char *err)
{
    struct sft_writer *sw = NULL;
    char p[4096];
    char *cfg = wt_hparams_to_json(hp, 1);
    if (!cfg) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = write_text(dir, "config.json", cfg, err);
    free(cfg);
    if (!rc) {
        char gen[256];
        snprintf(gen, sizeof gen,
                 "{\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
                 "  \"do_sample\": true,\n  \"temperature\": 0.6,\n  \"top_p\": 0.95\n}\n",
                 hp->bos_id, hp->eos_id);
        rc = write_text(dir, "generation_config.json", gen, err);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (!rc) rc = sft_writer_create(p, &sw, err);
    if (!rc) rc = sft_writer_meta(sw, "format", "pt", err);
    for (int i = 0; !rc && i < n_st; i++) rc = wt__job_declare_sft(sw, &st[i], err);
    if (!rc) rc = sft_writer_begin(sw, err);
    for (int i = 0; !rc && i < n_st; i++) {
        rc = wt__emit(em, &st[i], sw, NULL, err);
        if (!rc && wt__job_bytes(&st[i]) >= (64u << 20))
            LOG_INFO("convert", "%s: %s", st[i].name, em->zero ? "zeros" : "done");
    }
    if (!rc) rc = sft_writer_finish(sw, err);
    sft_writer_destroy(sw);
    return rc;
}

int wt__write_model(const struct wt__emitter *em, const struct wt_hparams *hp,
                    const struct wt__layout *lay, const char *dir, char *err)
{
    struct wt__job *st = NULL, *gg = NULL;
    int n_st = 0, n_gg = 0;
    char p[4096];
    int rc = wt__plan(hp, lay, &st, &n_st, &gg, &n_gg, err);
    if (rc) return rc;
    int ns = lay->gguf_split > 1 ? lay->gguf_split : 1;
    if (ns > 1 && (ns > n_gg || ns > 65535)) {
        rc = err_set(err, ERR_INVAL, "cannot split %d GGUF tensors into %d files", n_gg, ns);
        goto out;
    }
    for (int i = 0; i < n_gg; i++) {
        int ok;
        if (gg[i].fmt != WT_FMT_GGML) continue;
        qtype_row_bytes(gg[i].gtype, gg[i].cols, &ok);
        if (!ok) {
            rc = err_set(err, ERR_INVAL, "%s: %lld columns are not whole %s blocks of %d",
                         gg[i].name, (long long)gg[i].cols, qtype_name(gg[i].gtype),
                         qtype_traits(gg[i].gtype)->blck);
            goto out;
        }
    }
    if (!lay->gguf_only) rc = write_sft_side(em, hp, st, n_st, dir, err);
    const char *stem = lay->gguf_only ? "model" : "experts";
    for (int k = 0; !rc && n_gg && k < ns; k++) {
        int a = (int)((int64_t)n_gg * k / ns), b = (int)((int64_t)n_gg * (k + 1) / ns);
        if (ns == 1) snprintf(p, sizeof p, "%s/%s.gguf", dir, stem);
        else snprintf(p, sizeof p, "%s/%s-%05d-of-%05d.gguf", dir, stem, k + 1, ns);
        rc = write_gguf(em, hp, gg + a, b - a, k, ns, n_gg, p, lay->gguf_only ? dir : NULL, err);
    }
out:
    free(st);
    free(gg);
    return rc;
}
