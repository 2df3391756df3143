/* cmd_inspect.c - `tandem inspect DIR|FILE [--tensors] [--json] [--context N] [--no-validate]
 *                  [--placement cpu|hybrid|gpu] [--gpu-expert-layers N] [--max-batch-tokens N]
 *                  [--embed gpu|host] [--kv-b f32|bf16|fp8] [--requant-ggml on|off]
 *                  [--hot-experts off|auto|MiB] [--device-gib G] [--expert-counts FILE]
 *                  [--devices 0,1,...]`.
 *
 * Config only: when FILE is a .json file, or DIR holds a config.json and no .safetensors/.gguf
 * file, nothing is opened but the config: the report is the hyperparameters, the KV cache and
 * the GPU memory plan (engine/model/gpu_plan.h), computed from the shapes alone.
 *
 * Otherwise opens the model with the weights index (engine/weights), validates it (unless told
 * not to), and reports: architecture and hyperparameters; the files; per-layer parameter counts by
 * part (attention = q/kv projections, their latent norms and o_proj; norms = attn_norm + ffn_norm;
 * dense FFN; router = gate + correction bias; shared experts; one routed expert and all routed
 * experts); per-tensor name, shape, type, bytes and placement (with --tensors); totals per
 * placement (GPU side vs CPU routed experts); and the memory serving needs: hybrid = GPU-side
 * weights + latent KV cache on the GPU, experts in host memory; CPU-only = everything on the
 * host. The KV cache holds (kv_lora_rank + qk_rope) bf16 values per token per layer (576 for V3)
 * for --context tokens (default: max_position_embeddings), one sequence.
 * Parameter counts are element counts of the weights (FP8 scale tensors are not parameters).
 * Both modes end with the GPU plan for --placement (default hybrid) with --context KV tokens and
 * --max-batch-tokens (default 2048) per step: pools and weight parts in GiB ("gpu_plan" in
 * --json). --embed and --kv-b choose the layout variants the plan can price (default: what
 * ops_cuda uploads today: embeddings on the GPU, kv_b fp32). --hot-experts prices gpu.hot_experts
 * (auto: what --device-gib leaves after the other pools, less 512 MiB; without it auto is not
 * priced). --expert-counts reads a gpu.hot_experts_file of this model and prints the routing
 * histogram: per MoE layer the share of its routes taken by its most routed 1, 5%, 10%, 25% and
 * 50% of experts, and, with --hot-experts, the share of all recorded routes the plan's hot
 * experts would take (chosen as the engine chooses them, every expert at the plan's size).
 * --devices prices gpu.devices: the plan per device (gpu_plan_devices: the first takes the plan
 * above, every other one hot experts only, --hot-experts each, auto from --device-gib each;
 * "gpu_devices" in --json); with --expert-counts too, the hot experts placed over the devices
 * (engine/model/hot_place.h) and each device's share of the recorded routes ("hot_devices").
 *
 * Runs on the main thread; output to stdout, errors to stderr.
 */
#include "cmd.h"

#include "common/err.h"
#include "engine/model/expert_counts.h"
#include "engine/model/gpu_devices.h"
#include "engine/model/gpu_plan.h"
#include "engine/model/hot_place.h"
#include "engine/weights/weights.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum part { P_ATTN, P_NORM, P_DENSE, P_ROUTER, P_SHARED, P_ROUTED, P_OTHER, P_COUNT };
static const char *part_names[P_COUNT] = {"attention",     "norms",          "dense_ffn", "router",
                                          "shared_expert", "routed_experts", "other"};

static int64_t numel(const struct wt_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int is_scale(const char *n)
{
    size_t l = strlen(n);
    return l > 10 && strcmp(n + l - 10, "_scale_inv") == 0;
}

/* layer index of a canonical name, -1 for global tensors; the part it belongs to */
static int classify(const char *n, enum part *p)
{
    *p = P_OTHER;
    int l = -1;
    if (sscanf(n, "blk.%d.", &l) != 1) {
        return -1;
    }
    const char *s = strchr(n + 4, '.') + 1;
    if (wt_name_is_routed_expert(n)) *p = P_ROUTED;
    else if (strstr(s, "_shexp")) *p = P_SHARED;
    else if (!strncmp(s, "ffn_gate_inp", 12) || !strncmp(s, "exp_probs_b", 11)) *p = P_ROUTER;
    else if (!strncmp(s, "attn_norm", 9) || !strncmp(s, "ffn_norm", 8)) *p = P_NORM;
    else if (!strncmp(s, "attn_", 5)) *p = P_ATTN;
    else if (!strncmp(s, "ffn_gate.", 9) || !strncmp(s, "ffn_up.", 7) ||
             !strncmp(s, "ffn_down.", 9))
        *p = P_DENSE;
    return l;
}

static void human_bytes(double b, char *out, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, "%.2f %s", b, u[i]);
}

static json_t *shape_json(const struct wt_tensor *t)
{
    json_t *a = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static json_t *hparams_json(const struct wt_hparams *hp)
{
    json_t *o = json_pack(
        "{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
        " s:i, s:i, s:f, s:b, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:i}",
        "arch", hp->arch, "vocab_size", hp->vocab_size, "hidden_size", hp->hidden,
        "intermediate_size", hp->inter, "moe_intermediate_size", hp->moe_inter, "num_hidden_layers",
        hp->n_layers, "num_attention_heads", hp->n_heads, "q_lora_rank", hp->q_lora_rank,
        "kv_lora_rank", hp->kv_lora_rank, "qk_nope_head_dim", hp->qk_nope, "qk_rope_head_dim",
        hp->qk_rope, "v_head_dim", hp->v_head, "n_routed_experts", hp->n_routed, "n_shared_experts",
        hp->n_shared, "num_experts_per_tok", hp->top_k, "n_group", hp->n_group, "topk_group",
        hp->topk_group, "first_k_dense_replace", hp->first_k_dense, "moe_layer_freq",
        hp->moe_layer_freq, "routed_scaling_factor", (double)hp->routed_scale, "norm_topk_prob",
        hp->norm_topk_prob, "scoring_func", hp->scoring == WT_SCORE_SIGMOID ? "sigmoid" : "softmax",
        "topk_method", wt_topk_method(hp), "rms_norm_eps", (double)hp->rms_eps, "rope_theta",
        (double)hp->rope_theta, "max_position_embeddings", hp->max_pos, "bos_token_id", hp->bos_id,
        "eos_token_id", hp->eos_id, "num_nextn_predict_layers", hp->n_nextn);
    if (hp->yarn)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:f, s:i, s:f, s:f, s:f, s:f}", "type", "yarn",
                                      "factor", (double)hp->yarn_factor,
                                      "original_max_position_embeddings", hp->yarn_orig_ctx,
                                      "beta_fast", (double)hp->yarn_beta_fast, "beta_slow",
                                      (double)hp->yarn_beta_slow, "mscale", (double)hp->yarn_mscale,
                                      "mscale_all_dim", (double)hp->yarn_mscale_all_dim));
    if (hp->fp8_ue8m0) json_object_set_new(o, "scale_fmt", json_string("ue8m0"));
    return o;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tandem inspect DIR|FILE|CONFIG.json [--tensors] [--json] [--context N] "
            "[--no-validate]\n"
            "         [--placement cpu|hybrid|gpu] [--gpu-expert-layers N] "
            "[--max-batch-tokens N] [--embed gpu|host] [--kv-b f32|bf16|fp8]\n"
            "         [--requant-ggml on|off] [--hot-experts off|auto|MiB] [--device-gib G]\n"
            "         [--expert-counts FILE] [--devices 0,1,...]\n");
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Config-only input: the path of the config.json to read (into buf), or 0 when path is a model.
 * A .json file is a config; a directory is config-only when it has a config.json and no weight
 * file. */
static int config_only(const char *path, char *buf, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (S_ISREG(st.st_mode)) {
        if (!ends_with(path, ".json")) return 0;
        snprintf(buf, n, "%s", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) return 0;
    snprintf(buf, n, "%s/config.json", path);
    if (stat(buf, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    int weights = 0;
    for (struct dirent *e; !weights && (e = readdir(d));)
        weights = ends_with(e->d_name, ".safetensors") || ends_with(e->d_name, ".gguf");
    closedir(d);
    return !weights;
}

static json_t *plan_json(const struct gpu_plan *pl, const struct gpu_plan_params *p)
{
    const struct gpu_plan_weights *w = &pl->w;
#define I(x) ((json_int_t)(x))
    json_t *wj =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "attention",
                  I(w->attention), "kv_b", I(w->kv_b), "dense_ffn", I(w->dense_ffn),
                  "shared_experts", I(w->shared_experts), "router", I(w->router), "norms",
                  I(w->norms), "embed", I(w->embed), "lm_head", I(w->lm_head), "gpu_experts",
                  I(w->gpu_experts), "host_linears", I(w->host_linears), "total", I(pl->weights));
    json_t *dj =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "work_buffers", I(pl->act_model),
                  "fp8_scratch", I(pl->act_fp8), "cublaslt", I(pl->ws_cublaslt), "gemv",
                  I(pl->ws_gemv), "gemm_swap", I(pl->ws_gemm_swap), "mla", I(pl->ws_mla),
                  "block_tables", I(pl->ws_block_tables), "small", I(pl->ws_small));
    json_t *o = json_pack(
        "{s:s, s:I, s:i, s:i, s:i, s:b, s:b, s:s, s:o, s:I, s:I, s:I, s:I, s:I,"
        " s:I, s:I, s:I, s:o}",
        "placement", gpu_placement_name(p->placement), "kv_tokens", (json_int_t)pl->kv_tokens,
        "max_batch_tokens", p->max_batch_tokens, "gpu_expert_layers", pl->gpu_expert_layers,
        "moe_layers", pl->moe_layers, "kv_on_gpu", pl->kv_on_gpu, "embed_on_gpu", p->embed_on_gpu,
        "kv_b_type", qtype_name(p->kvb_type), "weights", wj, "kv", I(pl->kv), "kv_bytes_per_token",
        I(pl->kv_bytes_per_token), "activations", I(pl->activations), "workspace", I(pl->workspace),
        "rounding", I(pl->rounding), "runtime", I(pl->runtime), "total", I(pl->total),
        "pinned_host", I(pl->pinned_host), "detail", dj);
    json_object_set_new(o, "hot", json_integer(I(pl->hot)));
    json_object_set_new(o, "hot_experts", json_integer(I(pl->hot_experts)));
    json_object_set_new(o, "hot_expert_bytes", json_integer(I(pl->expert_bytes)));
#undef I
    return o;
}

static void print_header(const char *path, const struct wt_hparams *hp)
{
    int L = hp->n_layers, n_moe = 0;
    printf("model      %s\n", path);
    for (int l = 0; l < L; l++) n_moe += wt_layer_is_moe(hp, l);
    printf("arch       %s: %d layers (%d dense, %d MoE), hidden %d, %d heads, vocab %d\n", hp->arch,
           L, L - n_moe, n_moe, hp->hidden, hp->n_heads, hp->vocab_size);
    printf("attention  MLA q_lora %d, kv_lora %d, qk %d+%d, v %d\n", hp->q_lora_rank,
           hp->kv_lora_rank, hp->qk_nope, hp->qk_rope, hp->v_head);
    printf("experts    %d routed (top-%d, %d groups keep %d, %s %s, scale %.3g) + %d shared, "
           "inter %d; dense inter %d\n",
           hp->n_routed, hp->top_k, hp->n_group, hp->topk_group,
           hp->scoring == WT_SCORE_SIGMOID ? "sigmoid" : "softmax", wt_topk_method(hp),
           (double)hp->routed_scale, hp->n_shared, hp->moe_inter, hp->inter);
    printf("rope       theta %g", (double)hp->rope_theta);
    if (hp->yarn)
        printf(", yarn x%g from %d (beta %g/%g, mscale %g/%g)", (double)hp->yarn_factor,
               hp->yarn_orig_ctx, (double)hp->yarn_beta_fast, (double)hp->yarn_beta_slow,
               (double)hp->yarn_mscale, (double)hp->yarn_mscale_all_dim);
    printf("; max positions %d\n", hp->max_pos);
    if (hp->fp8_ue8m0) printf("fp8        activation scales ue8m0 (rounded up to powers of two)\n");
}

static int parse_int(const char *opt, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "tandem inspect: %s must be %lld..%lld\n", opt, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static struct gpu_devices devices; /* --devices; n = 0: not given */

/* --devices: the plan per device, as text or into root */
static void devices_report(const struct gpu_plan *pl, const struct gpu_plan_params *pp,
                           json_t *root)
{
    struct gpu_plan_dev d[GPU_DEVICES_MAX];
    if (!devices.n || gpu_plan_devices(pl, pp, devices.id, devices.n, d, NULL)) return;
    if (!root) {
        char buf[4096];
        gpu_plan_devices_format(d, devices.n, pl, "", buf, sizeof buf);
        printf("\n%s", buf);
        return;
    }
    json_t *a = json_array();
    for (int i = 0; i < devices.n; i++)
        json_array_append_new(a, json_pack("{s:i, s:b, s:I, s:f, s:f, s:f}", "device", d[i].device,
                                           "primary", d[i].primary, "hot_experts",
                                           (json_int_t)d[i].hot_experts, "hot_experts_bytes",
                                           d[i].hot_experts_bytes, "hot_ws_bytes", d[i].hot_ws,
                                           "total_bytes", d[i].total));
    json_object_set_new(root, "gpu_devices", a);
}

/* the GPU plan for hp, or an error message (exit 1) */
static int make_plan(const struct wt_hparams *hp, struct gpu_plan_params *pp, long long context,
                     struct gpu_plan *pl)
{
    char err[ERR_LEN] = "";
    pp->kv_tokens = context;
    int rc = gpu_plan_compute(hp, pp, pl, err);
    if (rc) fprintf(stderr, "tandem inspect: %s\n", err[0] ? err : err_message(rc));
    return rc;
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* --devices with --expert-counts: the hot experts placed over the devices as hot_place would
 * (each device's budget: its hot experts in the per-device plan), and each device's share of the
 * recorded routes ("hot_devices" in --json). */
static void devices_counts(const struct expert_counts *c, const struct gpu_plan *pl,
                           const struct gpu_plan_params *pp, const size_t *bytes, uint64_t total,
                           json_t *root)
{
    const int M = ec_shape(c)->moe_layers, E = ec_shape(c)->n_expert;
    struct gpu_plan_dev d[GPU_DEVICES_MAX];
    double bud[GPU_DEVICES_MAX];
    if (gpu_plan_devices(pl, pp, devices.id, devices.n, d, NULL)) return;
    for (int i = 0; i < devices.n; i++) bud[i] = (double)d[i].hot_experts * pl->expert_bytes;
    uint64_t *routes = malloc((size_t)M * E * sizeof *routes);
    int8_t *dev = malloc((size_t)M * E);
    struct hot_place hpl;
    if (!routes || !dev) goto out;
    ec_snapshot(c, routes);
    if (hot_place(routes, bytes, M, E, bud, devices.n, dev, &hpl) < 0) goto out;
    json_t *a = root ? json_array() : NULL;
    if (!root)
        printf("hot experts over %d devices: %d experts would take %.1f%% of these routes\n",
               devices.n, hpl.chosen, total ? 100.0 * (double)hpl.routes / (double)total : 0.0);
    for (int i = 0; i < devices.n; i++) {
        double sh = total ? (double)hpl.dev_routes[i] / (double)total : 0.0;
        if (!root)
            printf("  device %-3d %6d experts  %5.1f%% of the routes\n", devices.id[i],
                   hpl.count[i], 100.0 * sh);
        else
            json_array_append_new(a, json_pack("{s:i, s:i, s:I, s:f}", "device", devices.id[i],
                                               "experts", hpl.count[i], "routes",
                                               (json_int_t)hpl.dev_routes[i], "route_share", sh));
    }
    if (root) json_object_set_new(root, "hot_devices", a);
out:
    free(routes);
    free(dev);
}

/* --expert-counts: the routing histogram of a counts file (text; JSON: "expert_counts"), and the
 * share of the recorded routes the plan's hot experts would take. 0, or 1 after a message. */
static int expert_counts_report(const struct wt_hparams *hp, const char *file,
                                const struct gpu_plan *pl, const struct gpu_plan_params *pp,
                                json_t *root)
{
    char err[ERR_LEN] = "";
    struct expert_counts *c = NULL;
    int rc = ec_create(hp, &c, err);
    if (!rc) rc = ec_load(c, file, err);
    if (rc) {
        fprintf(stderr, "tandem inspect: %s\n", err[0] ? err : err_message(rc));
        ec_destroy(c);
        return 1;
    }
    const int M = ec_shape(c)->moe_layers, E = ec_shape(c)->n_expert;
    static const double fr[5] = {0, 0.05, 0.10, 0.25, 0.50}; /* 0: the top expert */
    uint64_t *row = malloc((size_t)E * sizeof *row);
    size_t *bytes = malloc((size_t)M * E * sizeof *bytes);
    uint8_t *hot = malloc((size_t)M * E);
    double all[5] = {0};
    json_t *jl = json_array();
    uint64_t total = ec_total(c);
    if (!root)
        printf("\nrouting counts %s: %llu routes over %d MoE layers x %d experts\n", file,
               (unsigned long long)total, M, E);
    if (!root)
        printf("  layer   routes      top 1    top 5%%   top 10%%   top 25%%   top 50%%  (uniform: "
               "%.1f%%, 5, 10, 25, 50%%)\n",
               100.0 / E);
    for (int r = 0; row && r < M; r++) {
        uint64_t sum = 0, acc = 0;
        for (int e = 0; e < E; e++) sum += row[e] = ec_get(c, r, e);
        qsort(row, (size_t)E, sizeof *row, cmp_u64_desc);
        double sh[5];
        for (int i = 0, k = 0; i < 5; i++) {
            int n = i == 0 ? 1 : (int)(fr[i] * E + 0.5);
            if (n < 1) n = 1;
            for (; k < n; k++) acc += row[k];
            sh[i] = sum ? (double)acc / (double)sum : 0;
            all[i] += sh[i] / M;
        }
        if (!root)
            printf("  %5d %8llu   %7.1f%% %7.1f%% %8.1f%% %8.1f%% %8.1f%%\n", ec_layer_of(c, r),
                   (unsigned long long)sum, 100 * sh[0], 100 * sh[1], 100 * sh[2], 100 * sh[3],
                   100 * sh[4]);
        else
            json_array_append_new(jl, json_pack("{s:i, s:I, s:[f, f, f, f, f]}", "layer",
                                                ec_layer_of(c, r), "routes", (json_int_t)sum,
                                                "top_share", sh[0], sh[1], sh[2], sh[3], sh[4]));
    }
    if (!root)
        printf("  mean           %7.1f%% %7.1f%% %8.1f%% %8.1f%% %8.1f%%\n", 100 * all[0],
               100 * all[1], 100 * all[2], 100 * all[3], 100 * all[4]);
    struct ec_choice ch = {0};
    if (bytes)
        for (size_t i = 0; i < (size_t)M * E; i++) bytes[i] = (size_t)pl->expert_bytes;
    int have_hot = bytes && hot && pl->hot_experts_bytes > 0 && pl->expert_bytes > 0;
    if (have_hot) {
        ec_choose_hot(c, bytes, pl->hot_experts_bytes, hot, &ch);
        if (!root)
            printf("hot experts: the plan's %lld experts would take %.1f%% of these routes "
                   "(their share of the experts: %.1f%%)\n",
                   (long long)ch.chosen, total ? 100.0 * (double)ch.routes / (double)total : 0.0,
                   100.0 * ch.chosen / ((double)M * E));
    }
    if (bytes && pl->expert_bytes > 0 && devices.n > 1)
        devices_counts(c, pl, pp, bytes, total, root);
    if (root)
        json_object_set_new(root, "expert_counts",
                            json_pack("{s:s, s:I, s:o, s:i, s:f}", "file", file, "routes",
                                      (json_int_t)total, "layers", jl, "hot_experts",
                                      have_hot ? ch.chosen : 0, "hot_route_share",
                                      have_hot && total ? (double)ch.routes / (double)total : 0.0));
    else json_decref(jl);
    free(row);
    free(bytes);
    free(hot);
    ec_destroy(c);
    return 0;
}

static int inspect_config(const char *path, const char *cfg, int as_json, long long context,
                          struct gpu_plan_params *pp, const char *counts)
{
    char err[ERR_LEN] = "";
    struct wt_hparams hp;
    int rc = wt_hparams_from_json_file(cfg, &hp, err);
    if (rc) {
        fprintf(stderr, "tandem inspect: %s\n", err[0] ? err : err_message(rc));
        return 1;
    }
    if (!context) context = hp.max_pos > 0 ? hp.max_pos : 4096;
    struct gpu_plan pl;
    if (make_plan(&hp, pp, context, &pl)) return 1;
    double kv_tok = (double)(hp.kv_lora_rank + hp.qk_rope) * 2.0 * hp.n_layers;
    if (as_json) {
        json_t *root =
            json_pack("{s:s, s:s, s:b, s:o, s:{s:I, s:I, s:I}, s:o}", "path", path, "config", cfg,
                      "config_only", 1, "hparams", hparams_json(&hp), "memory", "context",
                      (json_int_t)context, "kv_bytes_per_token", (json_int_t)kv_tok, "kv_bytes",
                      (json_int_t)(kv_tok * context), "gpu_plan", plan_json(&pl, pp));
        devices_report(&pl, pp, root);
        if (counts && expert_counts_report(&hp, counts, &pl, pp, root)) {
            json_decref(root);
            return 1;
        }
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(root);
        return 0;
    }
    print_header(path, &hp);
    printf("files      config only (%s): no weights opened; the plan below comes from the shapes\n",
           cfg);
    char a[32];
    human_bytes(kv_tok * (double)context, a, sizeof a);
    printf("KV cache   %.0f bytes/token (%d x %d bf16 per layer); %lld tokens: %s\n", kv_tok,
           hp.kv_lora_rank + hp.qk_rope, hp.n_layers, context, a);
    char buf[8192];
    gpu_plan_format(&pl, pp, "", buf, sizeof buf);
    printf("\n%s", buf);
    devices_report(&pl, pp, NULL);
    return counts ? expert_counts_report(&hp, counts, &pl, pp, NULL) : 0;
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int tensors = 0, as_json = 0, validate = 1, kvb_set = 0;
    long long context = 0, v;
    const char *counts = NULL;
    struct gpu_plan_params pp;
    gpu_plan_defaults(&pp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tensors")) tensors = 1;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "--no-validate")) validate = 0;
        else if (!strcmp(a, "--context") && val) {
            if (parse_int("--context", argv[++i], 1, 1ll << 26, &context)) return 2;
        } else if (!strcmp(a, "--gpu-expert-layers") && val) {
            if (parse_int("--gpu-expert-layers", argv[++i], 0, 1000, &v)) return 2;
            pp.gpu_expert_layers = (int)v;
        } else if (!strcmp(a, "--max-batch-tokens") && val) {
            if (parse_int("--max-batch-tokens", argv[++i], 1, 1048576, &v)) return 2;
            pp.max_batch_tokens = (int)v;
        } else if (!strcmp(a, "--placement") && val) {
            int pl = gpu_placement_parse(argv[++i]);
            if (pl < 0) {
                fprintf(stderr, "tandem inspect: --placement must be cpu, hybrid or gpu\n");
                return 2;
            }
            pp.placement = (enum gpu_placement)pl;
        } else if (!strcmp(a, "--embed") && val) {
            i++;
            if (strcmp(val, "gpu") && strcmp(val, "host")) {
                fprintf(stderr, "tandem inspect: --embed must be gpu or host\n");
                return 2;
            }
            pp.embed_on_gpu = !strcmp(val, "gpu");
        } else if (!strcmp(a, "--hot-experts") && val) {
            enum ec_hot_mode hm;
            long long mib;
            char e2[ERR_LEN];
            if (ec_parse_hot(argv[++i], &hm, &mib, e2)) {
                fprintf(stderr, "tandem inspect: --hot-experts: %s\n", e2);
                return 2;
            }
            pp.hot_mode = hm == EC_HOT_AUTO ? 1 : hm == EC_HOT_MIB ? 2 : 0;
            pp.hot_bytes = (double)mib * (1 << 20);
        } else if (!strcmp(a, "--device-gib") && val) {
            if (parse_int("--device-gib", argv[++i], 1, 1 << 20, &v)) return 2;
            pp.device_bytes = (double)v * (1 << 30);
        } else if (!strcmp(a, "--devices") && val) {
            char e2[ERR_LEN];
            if (gpu_devices_parse(argv[++i], 0, &devices, e2)) {
                fprintf(stderr, "tandem inspect: --devices: %s\n", e2);
                return 2;
            }
        } else if (!strcmp(a, "--expert-counts") && val) {
            counts = argv[++i];
        } else if (!strcmp(a, "--requant-ggml") && val) {
            i++;
            if (strcmp(val, "on") && strcmp(val, "off")) {
                fprintf(stderr, "tandem inspect: --requant-ggml must be on or off\n");
                return 2;
            }
            pp.requant_ggml = !strcmp(val, "on");
        } else if (!strcmp(a, "--kv-b") && val) {
            i++;
            kvb_set = 1;
            pp.kvb_type = !strcmp(val, "f32")    ? QTYPE_F32
                          : !strcmp(val, "bf16") ? QTYPE_BF16
                          : !strcmp(val, "fp8")  ? QTYPE_F8_E4M3
                                                 : -1;
            if (pp.kvb_type < 0) {
                fprintf(stderr, "tandem inspect: --kv-b must be f32, bf16 or fp8\n");
                return 2;
            }
        } else if (a[0] == '-' || path) {
            usage();
            return 2;
        } else path = a;
    }
    if (!path) {
        usage();
        return 2;
    }
    char cfg[4096];
    if (config_only(path, cfg, sizeof cfg))
        return inspect_config(path, cfg, as_json, context, &pp, counts);
    char err[ERR_LEN] = "";
    struct wt_model *m;
    int rc = wt_open(path, &m, err);
    if (rc) {
        fprintf(stderr, "tandem inspect: %s\n", err[0] ? err : err_message(rc));
        return 1;
    }
    if (validate && (rc = wt_validate(m, err))) {
        fprintf(stderr, "tandem inspect: %s\n", err[0] ? err : err_message(rc));
        wt_close(m);
        return 1;
    }
    const struct wt_hparams *hp = wt_hparams(m);
    int L = hp->n_layers;
    if (!context) context = hp->max_pos > 0 ? hp->max_pos : 4096;
    /* the plan assumes the FP8 checkpoint's formats; a BF16 or GGUF checkpoint's are its own */
    int kvb_opt = pp.kvb_type; /* --kv-b, if given, wins over the file's type */
    gpu_plan_types_from(&pp, m);
    if (kvb_set) pp.kvb_type = kvb_opt;
    for (int l = 0; l < hp->n_layers; l++) { /* the routed experts' type prices hot experts */
        struct wt_view ev;
        if (!wt_layer_is_moe(hp, l)) continue;
        if (wt_expert(m, l, WT_GATE, 0, &ev, NULL) == 0 && ev.type != QTYPE_F8_E4M3 &&
            ev.type != QTYPE_BF16)
            pp.stream_expert_type = ev.type;
        break;
    }
    struct gpu_plan plan;
    if (make_plan(hp, &pp, context, &plan)) {
        wt_close(m);
        return 1;
    }

    /* per layer, per part: params and bytes */
    int64_t(*lp)[P_COUNT] = calloc((size_t)L + 1, sizeof *lp);
    double *lgpu = calloc((size_t)L + 1, sizeof(double)),
           *lcpu = calloc((size_t)L + 1, sizeof(double));
    if (!lp || !lgpu || !lcpu) {
        fprintf(stderr, "tandem inspect: out of memory\n");
        free(lp);
        free(lgpu);
        free(lcpu);
        wt_close(m);
        return 1;
    }
    int64_t gp[P_COUNT] = {0}; /* global tensors (embedding, head, final norm) -> P_OTHER */
    double gpu_bytes = 0, cpu_bytes = 0, total_params = 0;
    double type_bytes[QTYPE_COUNT_] = {0};
    json_t *jt = json_array();
    for (int i = 0; i < wt_count(m); i++) {
        const struct wt_tensor *t = wt_at(m, i);
        enum part p;
        int l = classify(t->name, &p);
        int routed = p == P_ROUTED;
        if (routed) cpu_bytes += (double)t->nbytes;
        else gpu_bytes += (double)t->nbytes;
        if (t->type >= 0 && t->type < QTYPE_COUNT_) type_bytes[t->type] += (double)t->nbytes;
        if (l >= 0 && l < L) {
            if (routed) lcpu[l] += (double)t->nbytes;
            else lgpu[l] += (double)t->nbytes;
        }
        if (!is_scale(t->name)) {
            total_params += (double)numel(t);
            if (l >= 0 && l < L) lp[l][p] += numel(t);
            else gp[P_OTHER] += numel(t);
        }
        if (tensors)
            json_array_append_new(jt, json_pack("{s:s, s:o, s:s, s:I, s:s, s:s}", "name", t->name,
                                                "shape", shape_json(t), "type", qtype_name(t->type),
                                                "bytes", (json_int_t)t->nbytes, "placement",
                                                routed ? "cpu" : "gpu", "file",
                                                wt_file_name(m, t->file)));
    }
    double kv_tok = (double)(hp->kv_lora_rank + hp->qk_rope) * 2.0 * L;
    double kv = kv_tok * (double)context;

    json_t *layers = json_array();
    for (int l = 0; l < L; l++) {
        int moe = wt_layer_is_moe(hp, l);
        int64_t per_exp = 0;
        for (int p = 0; moe && p < 3; p++) {
            struct wt_view v;
            if (wt_expert(m, l, p, 0, &v, NULL) == 0) per_exp += v.rows * v.cols;
        }
        json_t *pj = json_object();
        for (int p = 0; p < P_COUNT; p++)
            if (p != P_OTHER || lp[l][p])
                json_object_set_new(pj, part_names[p], json_integer(lp[l][p]));
        json_object_set_new(pj, "routed_expert", json_integer(per_exp));
        json_array_append_new(layers,
                              json_pack("{s:i, s:s, s:o, s:I, s:I}", "layer", l, "kind",
                                        moe ? "moe" : "dense", "params", pj, "gpu_bytes",
                                        (json_int_t)lgpu[l], "cpu_bytes", (json_int_t)lcpu[l]));
    }
    json_t *files = json_array();
    for (int f = 0; f < wt_n_files(m); f++)
        json_array_append_new(files, json_string(wt_file_name(m, f)));
    json_t *root =
        json_pack("{s:s, s:o, s:o, s:o, s:{s:f, s:I, s:I, s:I, s:i}, s:{s:I, s:I, s:I, s:{s:I, "
                  "s:I}, s:{s:I}}}",
                  "path", path, "hparams", hparams_json(hp), "files", files, "layers", layers,
                  "totals", "params", total_params, "global_params", (json_int_t)gp[P_OTHER],
                  "gpu_bytes", (json_int_t)gpu_bytes, "cpu_expert_bytes", (json_int_t)cpu_bytes,
                  "tensors", wt_count(m), "memory", "context", (json_int_t)context,
                  "kv_bytes_per_token", (json_int_t)kv_tok, "kv_bytes", (json_int_t)kv, "hybrid",
                  "gpu_bytes", (json_int_t)(gpu_bytes + kv), "host_bytes", (json_int_t)cpu_bytes,
                  "cpu_only", "host_bytes", (json_int_t)(gpu_bytes + cpu_bytes + kv));
    json_t *bt = json_object();
    for (int ty = 0; ty < QTYPE_COUNT_; ty++)
        if (type_bytes[ty] > 0)
            json_object_set_new(bt, qtype_name(ty), json_integer((json_int_t)type_bytes[ty]));
    json_object_set_new(json_object_get(root, "totals"), "bytes_by_type", bt);
    if (tensors) json_object_set_new(root, "tensor_list", jt);
    else json_decref(jt);
    json_object_set_new(root, "gpu_plan", plan_json(&plan, &pp));
    devices_report(&plan, &pp, root);
    /* kv_b as stored: one kv_b_proj, or llama.cpp's split attn_k_b + attn_v_b
     * (engine/weights/mla.c) */
    const char *mla = wt_kv_b_split(m, 0) ? "split" : "kv_b";
    json_object_set_new(root, "mla_layout", json_string(mla));
    if (wt_skipped(m)[0]) json_object_set_new(root, "skipped", json_string(wt_skipped(m)));

    int crc = 0;
    if (as_json) {
        if (counts) crc = expert_counts_report(hp, counts, &plan, &pp, root);
        if (!crc) {
            json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            fputc('\n', stdout);
        }
    } else {
        char a[32], b[32], c[32];
        print_header(path, hp);
        printf("mla kv_b   %s\n", !strcmp(mla, "split") ? "split: llama.cpp's attn_k_b + attn_v_b"
                                                        : "attn_kv_b (kv_b_proj)");
        if (wt_skipped(m)[0]) printf("skipped    %s\n", wt_skipped(m));
        printf("files      %d\n", wt_n_files(m));
        for (int f = 0; f < wt_n_files(m); f++) printf("  %s\n", wt_file_name(m, f));
        printf("\nlayer kind  %12s %10s %12s %10s %12s %12s %14s\n", "attention", "norms",
               "dense_ffn", "router", "shared_exp", "per_expert", "routed_total");
        for (int l = 0; l < L; l++) {
            json_t *pj = json_object_get(json_array_get(layers, (size_t)l), "params");
            printf("%5d %-5s %12lld %10lld %12lld %10lld %12lld %12lld %14lld\n", l,
                   wt_layer_is_moe(hp, l) ? "moe" : "dense", (long long)lp[l][P_ATTN],
                   (long long)lp[l][P_NORM], (long long)lp[l][P_DENSE], (long long)lp[l][P_ROUTER],
                   (long long)lp[l][P_SHARED],
                   (long long)json_integer_value(json_object_get(pj, "routed_expert")),
                   (long long)lp[l][P_ROUTED]);
        }
        if (tensors) {
            printf("\n%-44s %-24s %-8s %14s %s\n", "tensor", "shape", "type", "bytes", "place");
            for (int i = 0; i < wt_count(m); i++) {
                const struct wt_tensor *t = wt_at(m, i);
                char sh[64] = "";
                for (int d = 0; d < t->ndim; d++)
                    snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%lld", d ? "x" : "",
                             (long long)t->shape[d]);
                printf("%-44s %-24s %-8s %14zu %s\n", t->name, sh, qtype_name(t->type), t->nbytes,
                       wt_name_is_routed_expert(t->name) ? "cpu" : "gpu");
            }
        }
        printf("\nparameters %.0f (%.2f B)\n", total_params, total_params / 1e9);
        human_bytes(gpu_bytes, a, sizeof a);
        human_bytes(cpu_bytes, b, sizeof b);
        printf("weights    GPU side %s, routed experts (CPU) %s; by type:", a, b);
        for (int ty = 0; ty < QTYPE_COUNT_; ty++)
            if (type_bytes[ty] > 0) {
                human_bytes(type_bytes[ty], c, sizeof c);
                printf(" %s %s", qtype_name(ty), c);
            }
        printf("\n");
        human_bytes(kv, a, sizeof a);
        printf("KV cache   %lld bytes/token (%d x %d bf16 per layer); %lld tokens: %s\n",
               (long long)kv_tok, hp->kv_lora_rank + hp->qk_rope, L, context, a);
        human_bytes(gpu_bytes + kv, a, sizeof a);
        human_bytes(cpu_bytes, b, sizeof b);
        human_bytes(gpu_bytes + cpu_bytes + kv, c, sizeof c);
        printf("serving    hybrid: GPU %s + host %s; CPU-only: host %s\n", a, b, c);
        char buf[8192];
        gpu_plan_format(&plan, &pp, "", buf, sizeof buf);
        printf("\n%s", buf);
        devices_report(&plan, &pp, NULL);
        if (counts) crc = expert_counts_report(hp, counts, &plan, &pp, NULL);
    }
    json_decref(root);
    free(lp);
    free(lgpu);
    free(lcpu);
    wt_close(m);
    return crc;
}
