/* engine.c - eng_create: load the model and start the engine thread over it.
 *
 * What: opens and validates the weights (engine/weights), creates the compute backend from the
 * gpu.* and cpu.* options (ops_create) and builds the forward pass on it (engine/model), sizes
 * the KV cache from the configuration and hands all of it, wrapped in a
 * struct sched_backend, to engine/sched (engine_thread.c implements the rest of engine.h:
 * submit, cancel, stats, the engine thread; scheduler.c the policy). The split keeps the scheduler
 * free of model dependencies so its tests run against a fake model.
 *
 * KV sizing: context = model.context if set (capped by max_position_embeddings), else
 * max_position_embeddings. Blocks = engine.kv_blocks if set, else enough for max_running full
 * contexts, capped at a quarter of physical memory; the context is then capped by what the cache
 * holds, so any admitted request can always run alone. The cache is mapped lazily, so unused
 * blocks cost address space, not memory.
 *
 * Sampling: the rows of a step are sampled on up to 8 threads (the engine thread plus workers
 * that sleep between steps, while the expert pool is idle anyway), when there are several rows
 * of a large vocabulary.
 *
 * Vocabulary: logits rows have the model's (padded) vocab_size; ids at or above the tokenizer's
 * size (tok_load: tokenizer.json or GGUF metadata; tok_n_used: a GGUF's trailing UNUSED padding
 * ids do not count) are never sampled.
 *
 * Threads: eng_create on the main thread, before the server starts. Ownership: struct eng_model
 * owns the weights, the backend and the model; the scheduler owns it (backend_destroy: the model
 * first, then the backend it was built on, then the weights).
 */
#include "engine.h"

#include "engine/model/gpu_plan.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/sched/sched.h"
#include "engine/text/tok.h"
#include "engine/weights/weights.h"

#include "common/err.h"
#include "common/log.h"
#include "config/cfg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eng_model {
    struct wt_model *w;
    struct ops *ops;
    struct model *m;
};

static int backend_forward(void *ctx, const struct model_kv *kv, const struct model_batch *b,
                           float *logits, char *err)
{
    struct eng_model *em = ctx;
    return model_forward(em->m, kv, b, logits, err);
}

static int backend_pass_begin(void *ctx, const struct model_kv *kv, const struct model_batch *b,
                              char *err)
{
    return model_pass_begin(((struct eng_model *)ctx)->m, kv, b, err);
}

static int backend_pass_run(void *ctx, int n_layers, int *left, char *err)
{
    return model_pass_run(((struct eng_model *)ctx)->m, n_layers, left, err);
}

static int backend_pass_finish(void *ctx, float *logits, char *err)
{
    return model_pass_finish(((struct eng_model *)ctx)->m, logits, err);
}

static void backend_pass_abort(void *ctx) { model_pass_abort(((struct eng_model *)ctx)->m); }

static void backend_destroy(void *ctx)
{
    struct eng_model *em = ctx;
    if (!em) return;
    model_destroy(em->m);
    ops_destroy(em->ops);
    wt_close(em->w);
    free(em);
}

static void say(void (*progress)(void *, double, const char *), void *ud, double f, const char *w)
{
    if (progress) progress(ud, f, w);
}

int eng_create(const struct cfg *cfg, void (*progress)(void *ud, double frac, const char *what),
               void *progress_ud, struct engine **out, char *err)
{
    *out = NULL;
    if (!cfg->model_path || !cfg->model_path[0])
        return err_set(err, ERR_CONFIG, "no model: set model.path (or --model DIR)");
    struct eng_model *em = calloc(1, sizeof *em);
    if (!em) return err_set(err, ERR_NOMEM, "out of memory");
    int rc;

    say(progress, progress_ud, 0.0, "opening weights");
    if ((rc = wt_open(cfg->model_path, &em->w, err)) != 0) goto fail;
    if (cfg->model_experts_from && cfg->model_experts_from[0] &&
        (rc = wt_add_dir(em->w, cfg->model_experts_from, err)) != 0)
        goto fail;
    say(progress, progress_ud, 0.2, "validating weights");
    if ((rc = wt_validate(em->w, err)) != 0) goto fail;
    const struct wt_hparams *hp = wt_hparams(em->w);

    say(progress, progress_ud, 0.4, "building the model");
    struct ops_params op = {
        .max_tokens = (int)cfg->engine_max_batch_tokens,
        .isa = cfg->cpu_isa,
        .n_threads = (int)cfg->cpu_threads,
        .pin = cfg->cpu_pin,
        .spin_us = (int)cfg->cpu_spin_us,
        .gpu_device = (int)cfg->gpu_device,
        .gpu_expert_layers = (int)cfg->gpu_expert_layers,
        .gpu_prefill_experts = !cfg->gpu_prefill_experts                   ? 0
                               : !strcmp(cfg->gpu_prefill_experts, "on")   ? 1
                               : !strcmp(cfg->gpu_prefill_experts, "auto") ? 2
                                                                           : 0,
        .gpu_prefill_min_tokens = (int)cfg->gpu_prefill_min_tokens,
        .gpu_stream_buffer_mb = (int)cfg->gpu_stream_buffer_mb,
        .gpu_prefill_split_tokens = (int)cfg->gpu_prefill_split_tokens,
        .gpu_keep_ggml = !cfg->gpu_requant_ggml,
    };
    if ((rc = ops_params_parse(&op, cfg->gpu_placement, cfg->gpu_fp8_gemm, err)) != 0 ||
        (rc = ops_create(&op, &em->ops, err)) != 0 ||
        (rc = model_create(em->w, em->ops, (int)cfg->engine_max_batch_tokens, &em->m, err)) != 0)
        goto fail;
    /* the scheduler's name for where the model runs: gpu placement is hybrid with GPU experts */
    const char *placement = ops_backend_of(em->ops) == OPS_BACKEND_CPU ? "cpu" : "hybrid";

    struct sched_backend be = {
        .ctx = em,
        .vocab = model_vocab(em->m),
        .n_layers = model_n_layers(em->m),
        .kv_dim = model_kv_dim(em->m),
        .kv_type = cfg->engine_kv_cache_type && !strcmp(cfg->engine_kv_cache_type, "f32")
                       ? MODEL_KV_F32
                       : MODEL_KV_BF16,
        .forward = backend_forward,
        .destroy = backend_destroy,
        .pass_begin = backend_pass_begin,
        .pass_run = backend_pass_run,
        .pass_finish = backend_pass_finish,
        .pass_abort = backend_pass_abort,
    };
    be.n_valid = be.vocab;
    if (hp->eos_id < 0 || hp->eos_id >= be.vocab || hp->bos_id < 0 || hp->bos_id >= be.vocab) {
        rc = err_set(err, ERR_FORMAT,
                     "%s: bos_token_id %d / eos_token_id %d outside the vocabulary "
                     "(%d tokens)",
                     cfg->model_path, hp->bos_id, hp->eos_id, be.vocab);
        goto fail;
    }
    {
        struct tok *t = NULL;
        char terr[ERR_LEN];
        if (tok_load(&t, cfg->model_path, terr) == 0) {
            int tv = tok_n_used(t);
            if (tv > 0 && tv < be.vocab) be.n_valid = tv;
            tok_destroy(t);
        }
    }

    struct sched_params sp = {
        .max_running = (int)cfg->engine_max_running,
        .max_queued = (int)cfg->engine_max_queued,
        .max_batch_tokens = (int)cfg->engine_max_batch_tokens,
        .kv_block_tokens = (int)cfg->engine_kv_block_tokens,
        .prefix_cache = cfg->engine_prefix_cache,
        .prefill_step_ratio = cfg->engine_prefill_step_ratio,
        .layered_prefill_tokens = (int)cfg->engine_layered_prefill_tokens,
        .bos_id = hp->bos_id,
        .eos_id = hp->eos_id,
        .placement = placement,
        .sample_min_work = 1 << 17, /* about one DeepSeek-V3 row: below, one thread is faster */
    };
    {
        long cores = cfg->cpu_threads > 0 ? (long)cfg->cpu_threads : sysconf(_SC_NPROCESSORS_ONLN);
        sp.sample_threads = cores > 8 ? 7 : cores > 1 ? (int)cores - 1 : 0;
    }
    int context = hp->max_pos > 0 ? hp->max_pos : 4096;
    if (cfg->model_context > 0 && cfg->model_context < context) context = (int)cfg->model_context;
    size_t tok_bytes = (size_t)be.n_layers * be.kv_dim * model_kv_elem_size(be.kv_type);
    long long blocks = cfg->engine_kv_blocks;
    if (blocks <= 0) {
        long long bt = sp.kv_block_tokens;
        long long per_seq = (context + bt - 1) / bt;
        blocks = per_seq * sp.max_running;
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        double cap_bytes = pages > 0 && psz > 0 ? (double)pages * psz / 4 : 8.0 * (1 << 30);
        long long cap = (long long)(cap_bytes / ((double)tok_bytes * bt));
        if (blocks > cap) blocks = cap > 1 ? cap : 1;
        if (blocks > 100000000) blocks = 100000000;
    }
    if (!strcmp(placement, "hybrid") && be.kv_type == MODEL_KV_F32)
        LOG_NOTICE("engine", "engine.kv_cache_type = f32: the KV cache stays in host memory and "
                             "attention runs on the CPU (the GPU MLA kernels read bf16)");
    if (!strcmp(placement, "hybrid") && be.kv_type == MODEL_KV_BF16) {
        /* The GPU memory plan (engine/model/gpu_plan.h, docs/gpu-memory.md), logged; when the KV
         * cache lives on the device (attention on the GPU kernels) and engine.kv_blocks is not
         * set, it is also capped to what the device has left after the weights and buffers. */
        struct gpu_plan_params pp;
        struct gpu_plan pl;
        char perr[ERR_LEN];
        int sms = 0;
        size_t free_b = ops_device_free(em->ops, &sms);
        gpu_plan_defaults(&pp);
        pp.kv_tokens = blocks * sp.kv_block_tokens;
        pp.max_batch_tokens = sp.max_batch_tokens;
        pp.kv_block_tokens = sp.kv_block_tokens;
        if (sms > 0) pp.sms = sms;
        pp.fp8_gemm_cublaslt = cfg->gpu_fp8_gemm && !strcmp(cfg->gpu_fp8_gemm, "cublaslt");
        if (cfg->gpu_placement && !strcmp(cfg->gpu_placement, "gpu")) pp.placement = GPU_PLACE_GPU;
        pp.gpu_expert_layers = (int)cfg->gpu_expert_layers;
        pp.prefill_experts = cfg->gpu_prefill_experts && strcmp(cfg->gpu_prefill_experts, "off");
        pp.layered_prefill =
            cfg->engine_prefill_step_ratio > 1.0 && cfg->engine_layered_prefill_tokens > 0;
        pp.stream_buffer_mb = (int)cfg->gpu_stream_buffer_mb;
        pp.requant_ggml = cfg->gpu_requant_ggml;
        gpu_plan_types_from(&pp, em->w); /* a BF16 or GGUF checkpoint's weight types */
        if (gpu_plan_compute(hp, &pp, &pl, perr) == 0) {
            gpu_plan_log(&pl, &pp);
            const double margin = 512.0 * (1 << 20); /* MLA workspace growth, block tables */
            if (pl.kv_on_gpu && cfg->engine_kv_blocks <= 0 && free_b > 0) {
                double room = (double)free_b - margin - pl.ws_mla - pl.ws_block_tables;
                long long fit =
                    room > 0 ? (long long)(room / (pl.kv_bytes_per_token * sp.kv_block_tokens)) : 0;
                if (fit < 1) fit = 1;
                if (blocks > fit) {
                    LOG_NOTICE("engine",
                               "KV cache capped from %lld to %lld blocks: the device has "
                               "%.2f GiB free after the weights (set engine.kv_blocks to choose)",
                               blocks, fit, (double)free_b / (1 << 30));
                    blocks = fit;
                }
            }
        } else {
            LOG_WARN("engine", "GPU memory plan: %s", perr);
        }
    }
    sp.kv_blocks = (int)blocks;
    long long kv_tokens = blocks * sp.kv_block_tokens;
    if (context > kv_tokens) {
        LOG_WARN("engine", "context capped from %d to %lld tokens by the KV cache size", context,
                 kv_tokens);
        context = (int)kv_tokens;
    }
    sp.context = context;
    if (cfg->model_name && cfg->model_name[0]) {
        snprintf(sp.model_name, sizeof sp.model_name, "%s", cfg->model_name);
    } else {
        const char *d = cfg->model_path;
        size_t n = strlen(d);
        while (n > 1 && d[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && d[b - 1] != '/') b--;
        snprintf(sp.model_name, sizeof sp.model_name, "%.*s", (int)(n - b), d + b);
    }
    LOG_INFO("engine", "model %s: %d layers, vocab %d (%d sampled), context %d, %s (%s)",
             sp.model_name, be.n_layers, be.vocab, be.n_valid, sp.context, placement,
             ops_name(em->ops));

    say(progress, progress_ud, 0.9, "allocating the KV cache");
    if ((rc = eng_create_backend(&sp, &be, out, err)) != 0) goto fail;
    say(progress, progress_ud, 1.0, "ready");
    return 0;
fail:
    backend_destroy(em);
    return rc;
}
