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
 * gpu.devices (engine/model/gpu_devices.h) is checked before anything is opened: a bad list or a
 * device that does not exist is a configuration error, and so is a list of several devices
 * (planned by `tandem inspect --devices`, not executed yet); one device listed replaces gpu.device.
 *
 * Routing counts and hot experts (engine/model/expert_counts.h, hot_experts.h; docs/gpu.md "Hot
 * experts"): every MoE layer counts its routes into struct eng_model's counts, loaded at start-up
 * from gpu.hot_experts_file when set (a missing, corrupt or other model's file is logged and
 * ignored) and written back by an autosave thread every 60 s while they change and once more at
 * shutdown. With gpu.hot_experts on (hybrid), after the KV cache is sized, the experts the
 * counts favour fill the chosen budget of device memory: a number of MiB (taken off the free
 * memory before the KV cache is capped to it), or auto: what the device has free after the
 * weights, the work buffers and the planned KV cache, less 512 MiB. The memory plan logged at
 * start-up includes them.
 *
 * Threads: eng_create on the main thread, before the server starts. Ownership: struct eng_model
 * owns the weights, the backend, the model and the routing counts; the scheduler owns it
 * (backend_destroy: the counts' last save, the model, then the backend it was built on, the
 * counts, then the weights).
 */
#include "engine.h"

#include "engine/model/expert_counts.h"
#include "engine/model/gpu_comm.h"
#include "engine/model/gpu_devices.h"
#include "engine/model/gpu_plan.h"
#include "engine/model/hot_experts.h"
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

#define COUNTS_SAVE_MS 60000 /* gpu.hot_experts_file: autosave period */

struct eng_model {
    struct wt_model *w;
    struct ops *ops;
    struct model *m;
    struct expert_counts *ec; /* routing counts; NULL for a model without routed experts */
    int hot_experts;          /* experts placed in device memory (gpu.hot_experts) */
    double hot_bytes;
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

static void backend_stats(void *ctx, struct eng_stats *out)
{
    struct eng_model *em = ctx;
    out->expert_routes_total = ec_routes(em->ec);
    out->hot_expert_routes_total = ec_hot_routes(em->ec);
    out->hot_experts = em->hot_experts;
    out->hot_expert_bytes = (uint64_t)em->hot_bytes;
}

static void backend_destroy(void *ctx)
{
    struct eng_model *em = ctx;
    if (!em) return;
    char e2[ERR_LEN];
    if (em->ec && ec_autosave_stop(em->ec, e2)) LOG_WARN("engine", "%s", e2); /* last save */
    model_destroy(em->m);
    ops_destroy(em->ops);
    ec_destroy(em->ec);
    wt_close(em->w);
    free(em);
}

/* The routing counts of a MoE model: created, loaded from gpu.hot_experts_file (when set) and
 * fed by every MoE layer. */
static int counts_setup(struct eng_model *em, const struct cfg *cfg, char *err)
{
    if (!model_moe(em->m, 0, NULL)) return 0;
    int rc = ec_create(wt_hparams(em->w), &em->ec, err);
    if (rc) return rc;
    const char *f = cfg->gpu_hot_experts_file;
    if (f && f[0]) {
        char e2[ERR_LEN];
        int lr = ec_load(em->ec, f, e2);
        if (lr == 0)
            LOG_INFO("engine", "routing counts: %llu routes recorded earlier, from %s",
                     (unsigned long long)ec_total(em->ec), f);
        else if (lr == ERR_NOT_FOUND)
            LOG_INFO("engine",
                     "routing counts: %s does not exist yet; counting from none (it is written "
                     "every %d s while serving and at shutdown)",
                     f, COUNTS_SAVE_MS / 1000);
        else LOG_WARN("engine", "%s; ignored: counting from none, the file is rewritten", e2);
    }
    return hot_experts_attach(em->m, em->ops, em->ec, err);
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
    struct gpu_devices devs;
    if ((rc = gpu_devices_parse(cfg->gpu_devices, (int)cfg->gpu_device, &devs, err)) != 0 ||
        (devs.from_list && (rc = gpu_devices_check(&devs, err)) != 0))
        goto fail;
    if (devs.n > 1) { /* planned, not executed (docs/gpu.md, Several GPUs) */
        char list[128];
        gpu_devices_format(&devs, list, sizeof list);
        if (!gpu_comm_available()) {
            rc = err_set(err, ERR_CONFIG,
                         "gpu.devices = %s: several devices need NCCL: this build has none, or "
                         "libnccl.so.2 could not be opened",
                         list);
            goto fail;
        }
        rc = err_set(err, ERR_CONFIG,
                     "gpu.devices = %s: serving on several GPUs is not built yet (hot experts "
                     "are executed on the first device only); list one device. `tandem inspect "
                     "MODEL --devices %s` prints the plan per GPU",
                     list, list);
        goto fail;
    }

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
        .gpu_device = devs.id[0],
        .gpu_expert_layers = (int)cfg->gpu_expert_layers,
        .gpu_prefill_experts = !cfg->gpu_prefill_experts                   ? 0
                               : !strcmp(cfg->gpu_prefill_experts, "on")   ? 1
                               : !strcmp(cfg->gpu_prefill_experts, "auto") ? 2
                                                                           : 0,
        .gpu_prefill_min_tokens = (int)cfg->gpu_prefill_min_tokens,
        .gpu_stream_buffer_mb = (int)cfg->gpu_stream_buffer_mb,
        .gpu_prefill_split_tokens = (int)cfg->gpu_prefill_split_tokens,
        .gpu_stream_source = cfg->gpu_stream_source && !strcmp(cfg->gpu_stream_source, "alloc"),
        .gpu_graphs = (int)cfg->gpu_cuda_graphs,
        .gpu_prefill_attn_mb = (int)cfg->gpu_prefill_attention_mb,
        .gpu_keep_ggml = !cfg->gpu_requant_ggml,
    };
    enum ec_hot_mode hot_mode;
    long long hot_mib;
    if ((rc = ec_parse_hot(cfg->gpu_hot_experts, &hot_mode, &hot_mib, err)) != 0) goto fail;
    op.gpu_hot_experts = hot_mode != EC_HOT_OFF;
    if ((rc = ops_params_parse(&op, cfg->gpu_placement, cfg->gpu_fp8_gemm, err)) != 0 ||
        (rc = ops_create(&op, &em->ops, err)) != 0 ||
        (rc = model_create(em->w, em->ops, (int)cfg->engine_max_batch_tokens, &em->m, err)) != 0 ||
        (rc = counts_setup(em, cfg, err)) != 0)
        goto fail;
    if (cfg->engine_defer_experts > 0) {
        int k = model_moe(em->m, 0, NULL) ? hp->top_k : 0;
        if (cfg->engine_defer_experts > k) {
            rc = err_set(err, ERR_CONFIG,
                         "engine.defer_experts = %lld: the model routes %d experts per token",
                         (long long)cfg->engine_defer_experts, k);
            goto fail;
        }
        if ((rc = model_set_defer(em->m, (int)cfg->engine_defer_experts, err)) != 0) goto fail;
        LOG_NOTICE("engine",
                   "engine.defer_experts = %lld: of each token's %d routed experts, the %lld of "
                   "smallest weight are added one layer late (changes the output)",
                   (long long)cfg->engine_defer_experts, k, (long long)cfg->engine_defer_experts);
    }
    /* the scheduler's name for where the model runs: gpu placement is hybrid with GPU experts */
    const char *placement = ops_backend_of(em->ops) == OPS_BACKEND_CPU ? "cpu" : "hybrid";
    if (hot_mode != EC_HOT_OFF && strcmp(placement, "hybrid"))
        LOG_NOTICE("engine", "gpu.hot_experts = %s is ignored: the model runs on the CPU",
                   cfg->gpu_hot_experts);

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
        .stats = backend_stats,
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
    const double margin = 512.0 * (1 << 20); /* MLA workspace growth, block tables */
    const double hot_given = hot_mode == EC_HOT_MIB ? (double)hot_mib * (1 << 20) : 0;
    struct gpu_plan_params pp;
    struct gpu_plan pl;
    int plan_ok = 0, sms = 0;
    size_t free_b = 0;
    if (!strcmp(placement, "hybrid")) free_b = ops_device_free(em->ops, &sms);
    if (!strcmp(placement, "hybrid") && be.kv_type == MODEL_KV_BF16) {
        /* The GPU memory plan (engine/model/gpu_plan.h, docs/gpu-memory.md), logged; when the KV
         * cache lives on the device (attention on the GPU kernels) and engine.kv_blocks is not
         * set, it is also capped to what the device has left after the weights and buffers (and
         * a given gpu.hot_experts size). */
        char perr[ERR_LEN];
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
        pp.prefill_attention_mb = (int)cfg->gpu_prefill_attention_mb;
        pp.defer_experts = cfg->engine_defer_experts > 0;
        pp.requant_ggml = cfg->gpu_requant_ggml;
        gpu_plan_types_from(&pp, em->w); /* a BF16 or GGUF checkpoint's weight types */
        if (gpu_plan_compute(hp, &pp, &pl, perr) == 0) {
            plan_ok = 1;
            if (pp.prefill_experts && pl.moe_layers > 0 && pp.max_batch_tokens < 8192) {
                /* a prompt prefills in chunks of max_batch_tokens, and every chunk copies nearly
                 * all of each layer's experts over the link once: short chunks multiply it */
                struct gpu_plan_params p8 = pp;
                struct gpu_plan l8;
                p8.max_batch_tokens = 8192;
                if (gpu_plan_compute(hp, &p8, &l8, perr) == 0)
                    LOG_NOTICE("engine",
                               "gpu.prefill_experts: prompts prefill in chunks of %d tokens "
                               "(engine.max_batch_tokens), each streaming the experts of every "
                               "layer again; 8192-token chunks copy them %.1fx less often for "
                               "%.2f GiB more device memory (docs/gpu.md)",
                               pp.max_batch_tokens, 8192.0 / pp.max_batch_tokens,
                               (l8.total - pl.total) / (1 << 30));
            }
            if (pl.kv_on_gpu && cfg->engine_kv_blocks <= 0 && free_b > 0) {
                double room = (double)free_b - margin - pl.ws_mla - pl.ws_mla_prefill -
                              pl.ws_block_tables - hot_given;
                long long fit =
                    room > 0 ? (long long)(room / (pl.kv_bytes_per_token * sp.kv_block_tokens)) : 0;
                if (fit < 1) fit = 1;
                if (blocks > fit) {
                    LOG_NOTICE("engine",
                               "KV cache capped from %lld to %lld blocks: the device has "
                               "%.2f GiB free after the weights%s (set engine.kv_blocks to "
                               "choose)",
                               blocks, fit, (double)free_b / (1 << 30),
                               hot_given > 0 ? " and gpu.hot_experts" : "");
                    blocks = fit;
                }
            }
        } else {
            LOG_WARN("engine", "GPU memory plan: %s", perr);
        }
    }
    if (!strcmp(placement, "hybrid") && hot_mode != EC_HOT_OFF && em->ec) {
        /* hot experts: a given size, or what is left after the planned KV cache */
        double budget = hot_given;
        if (hot_mode == EC_HOT_AUTO) {
            double kv = plan_ok && pl.kv_on_gpu
                            ? pl.kv_bytes_per_token * (double)blocks * sp.kv_block_tokens +
                                  pl.ws_mla + pl.ws_mla_prefill + pl.ws_block_tables
                            : 0;
            budget = (double)free_b - margin - kv;
            if (budget < 0) budget = 0;
        }
        struct hot_report hr;
        char e2[ERR_LEN], d[512];
        if (hot_experts_place(em->m, em->ops, em->ec, budget, &hr, e2) == 0) {
            hot_experts_describe(&hr, d, sizeof d);
            LOG_INFO("engine", "hot experts (gpu.hot_experts = %s): %s", cfg->gpu_hot_experts, d);
            em->hot_experts = hr.ch.chosen;
            em->hot_bytes = hr.ch.bytes;
            if (hot_mode == EC_HOT_AUTO && hr.ch.chosen == 0 && hr.ch.candidates > 0)
                LOG_NOTICE("engine",
                           "hot experts: auto found no room (%.2f GiB free after the weights, "
                           "the KV cache takes the rest): set model.context, engine.max_running "
                           "or engine.kv_blocks lower, or gpu.hot_experts to a size",
                           (double)free_b / (1 << 30));
        } else {
            LOG_WARN("engine", "hot experts off: %s", e2);
        }
        if (plan_ok) {
            pp.hot_mode = 2;
            pp.hot_bytes = em->hot_bytes;
            pp.hot_count = em->hot_experts;
        }
    }
    if (plan_ok) { /* the plan as it was set up: KV as capped, hot experts as placed */
        pp.kv_tokens = blocks * sp.kv_block_tokens;
        char perr[ERR_LEN];
        if (gpu_plan_compute(hp, &pp, &pl, perr) == 0) gpu_plan_log(&pl, &pp);
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
    if (em->ec && cfg->gpu_hot_experts_file && cfg->gpu_hot_experts_file[0]) {
        char e2[ERR_LEN];
        if (ec_autosave_start(em->ec, cfg->gpu_hot_experts_file, COUNTS_SAVE_MS, e2))
            LOG_WARN("engine", "%s: the routing counts are not saved", e2);
    }
    say(progress, progress_ud, 1.0, "ready");
    return 0;
fail:
    backend_destroy(em);
    return rc;
}
