/* test_hparams.c - GGUF deepseek2.* metadata -> wt_hparams: a minimal valid header reads back;
 * out-of-range or non-finite float keys (rope base, RMS epsilon, expert weight scale, YaRN
 * factor, log multiplier and betas) and out-of-range integer keys give ERR_FORMAT naming the key.
 * rope.scaling.yarn_beta_fast/_slow are read when present (random values, TANDEM_TEST_SEED),
 * 32/1 otherwise; expert_gating_func absent or 0 means softmax (llama.cpp) and arch deepseek_v2,
 * 2 sigmoid; a V2/V2.5-shaped file (160 experts, hidden 5120, softmax) without group keys gets
 * 8 groups keeping 3.
 * config.json: DeepSeek-V2-Lite's and DeepSeek-V2.5's published configs read as their spec
 * values; topk_method greedy drops the groups, group_limited_greedy keeps them, an unknown method
 * or one that does not fit scoring_func is ERR_UNSUPPORTED naming topk_method; deepseek_v2 with
 * norm_topk_prob drops routed_scaling_factor; random routing setups survive
 * wt_hparams_to_json -> parse unchanged. quantization_config.scale_fmt: DeepSeek-V3.1's "ue8m0"
 * sets fp8_ue8m0 (and survives wt_hparams_to_json with fp8), absent / null / no
 * quantization_config leave it 0, any other value is a load error naming the key
 * (ERR_UNSUPPORTED for another string, ERR_FORMAT for a non-string). */
#include "check.h"
#include "common/err.h"
#include "engine/weights/gguf.h"
#include "engine/weights/weights_internal.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
static int gating = -1; /* >= 0: write deepseek2.expert_gating_func */
/* more u32 keys (NULL-terminated), replacing the required ones of the same name */
static const char *more_keys[6];
static uint32_t more_vals[6];

/* a header-only deepseek2 GGUF with the required keys; bad_key (if set) gets bad_val */
static int read_hp(const char *bad_key, float bad_val, struct wt_hparams *hp, char *err)
{
    char p[512];
    snprintf(p, sizeof p, "%s/h.gguf", dir);
    struct gguf_writer *w;
    CHECK_EQ(gguf_writer_create(p, &w, err), 0);
    CHECK_EQ(gguf_writer_set_str(w, "general.architecture", "deepseek2"), 0);
    const char *ints[] = {"block_count",
                          "embedding_length",
                          "feed_forward_length",
                          "attention.head_count",
                          "attention.kv_lora_rank",
                          "attention.key_length",
                          "attention.value_length",
                          "rope.dimension_count"};
    const uint32_t vals[] = {2, 64, 128, 4, 32, 48, 32, 16};
    char k[128];
    for (int i = 0; more_keys[i]; i++) {
        snprintf(k, sizeof k, "deepseek2.%s", more_keys[i]);
        CHECK_EQ(gguf_writer_set_u32(w, k, more_vals[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        int given = 0;
        for (int j = 0; more_keys[j]; j++) given |= !strcmp(more_keys[j], ints[i]);
        snprintf(k, sizeof k, "deepseek2.%s", ints[i]);
        if (!given) CHECK_EQ(gguf_writer_set_u32(w, k, vals[i]), 0);
    }
    CHECK_EQ(gguf_writer_set_str(w, "deepseek2.rope.scaling.type", "yarn"), 0);
    if (gating >= 0)
        CHECK_EQ(gguf_writer_set_u32(w, "deepseek2.expert_gating_func", (uint32_t)gating), 0);
    if (bad_key) {
        snprintf(k, sizeof k, "deepseek2.%s", bad_key);
        CHECK_EQ(gguf_writer_set_f32(w, k, bad_val), 0);
    }
    CHECK_EQ(gguf_writer_begin(w, err), 0);
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    gguf_writer_destroy(w);
    struct gguf_ctx *g;
    CHECK_EQ(gguf_open(p, &g, err), 0);
    int rc = wt__hparams_gguf(g, hp, err);
    gguf_close(g);
    return rc;
}

static void expect_bad(const char *key, float v)
{
    struct wt_hparams hp;
    char err[ERR_LEN] = "";
    CHECK_EQ(read_hp(key, v, &hp, err), ERR_FORMAT);
    CHECK_CONTAINS(err, key);
}

/* DeepSeek-V2-Lite-Chat's config.json as published (auto_map and training-only keys left out) */
static const char v2_lite[] =
    "{\"architectures\": [\"DeepseekV2ForCausalLM\"], \"attention_bias\": false, "
    "\"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001, \"bos_token_id\": 100000, "
    "\"eos_token_id\": 100001, \"first_k_dense_replace\": 1, \"hidden_act\": \"silu\", "
    "\"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 10944, "
    "\"kv_lora_rank\": 512, \"max_position_embeddings\": 163840, \"model_type\": "
    "\"deepseek_v2\", \"moe_intermediate_size\": 1408, \"moe_layer_freq\": 1, \"n_group\": 1, "
    "\"n_routed_experts\": 64, \"n_shared_experts\": 2, \"norm_topk_prob\": false, "
    "\"num_attention_heads\": 16, \"num_experts_per_tok\": 6, \"num_hidden_layers\": 27, "
    "\"num_key_value_heads\": 16, \"pretraining_tp\": 1, \"q_lora_rank\": null, "
    "\"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"rms_norm_eps\": 1e-06, "
    "\"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 0.707, "
    "\"mscale_all_dim\": 0.707, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"}, "
    "\"rope_theta\": 10000, \"routed_scaling_factor\": 1.0, \"scoring_func\": \"softmax\", "
    "\"seq_aux\": true, \"tie_word_embeddings\": false, \"topk_group\": 1, \"topk_method\": "
    "\"greedy\", \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"v_head_dim\": 128, "
    "\"vocab_size\": 102400}";

/* DeepSeek-V2 / V2.5 (236B): the keys that differ from V2-Lite's */
static const char v2_5[] =
    "{\"model_type\": \"deepseek_v2\", \"hidden_size\": 5120, \"intermediate_size\": 12288, "
    "\"moe_intermediate_size\": 1536, \"num_hidden_layers\": 60, \"num_attention_heads\": 128, "
    "\"q_lora_rank\": 1536, \"kv_lora_rank\": 512, \"n_routed_experts\": 160, "
    "\"n_shared_experts\": 2, \"num_experts_per_tok\": 6, \"n_group\": 8, \"topk_group\": 3, "
    "\"topk_method\": \"group_limited_greedy\", \"routed_scaling_factor\": 16.0, "
    "\"scoring_func\": \"softmax\", \"norm_topk_prob\": false, \"first_k_dense_replace\": 1, "
    "\"vocab_size\": 102400, \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, "
    "\"factor\": 40, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, "
    "\"original_max_position_embeddings\": 4096, \"type\": \"yarn\"}}";

/* cfg with `key` set to the JSON value `val` (replacing the key's text up to the next comma) */
static int json_with(const char *cfg, const char *key, const char *val, struct wt_hparams *hp,
                     char *err)
{
    char buf[4096], pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(cfg, pat);
    CHECK(p != NULL);
    const char *e = strchr(p, ',');
    CHECK(e != NULL);
    snprintf(buf, sizeof buf, "%.*s%s%s%s", (int)(p - cfg), cfg, pat, val, e);
    return wt_hparams_from_json_text(buf, strlen(buf), hp, err);
}

static void check_config_json(unsigned long long seed)
{
    struct wt_hparams hp;
    char err[ERR_LEN] = "";
    int rc = wt_hparams_from_json_text(v2_lite, strlen(v2_lite), &hp, err);
    if (rc) fprintf(stderr, "V2-Lite: %s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_STR(hp.arch, "deepseek_v2");
    CHECK_EQ(hp.q_lora_rank, 0);
    CHECK_EQ(hp.hidden, 2048);
    CHECK_EQ(hp.n_heads, 16);
    CHECK_EQ(hp.inter, 10944);
    CHECK_EQ(hp.moe_inter, 1408);
    CHECK_EQ(hp.n_routed, 64);
    CHECK_EQ(hp.n_shared, 2);
    CHECK_EQ(hp.top_k, 6);
    CHECK_EQ(hp.n_group, 1);
    CHECK_EQ(hp.topk_group, 1);
    CHECK_EQ(hp.first_k_dense, 1);
    CHECK_EQ(hp.scoring, WT_SCORE_SOFTMAX);
    CHECK_EQ(hp.norm_topk_prob, 0);
    CHECK_NEAR(hp.routed_scale, 1, 0);
    CHECK_EQ(hp.yarn, 1);
    CHECK_NEAR(hp.yarn_factor, 40, 0);
    CHECK_NEAR(hp.yarn_mscale, 0.707f, 0);
    CHECK_NEAR(hp.yarn_mscale_all_dim, 0.707f, 0);
    CHECK_EQ(hp.yarn_orig_ctx, 4096);
    CHECK_EQ(hp.bos_id, 100000);
    CHECK_EQ(hp.eos_id, 100001);
    CHECK_STR(wt_topk_method(&hp), "greedy");

    rc = wt_hparams_from_json_text(v2_5, strlen(v2_5), &hp, err);
    if (rc) fprintf(stderr, "V2.5: %s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_STR(hp.arch, "deepseek_v2");
    CHECK_EQ(hp.q_lora_rank, 1536);
    CHECK_EQ(hp.n_routed, 160);
    CHECK_EQ(hp.n_group, 8);
    CHECK_EQ(hp.topk_group, 3);
    CHECK_NEAR(hp.routed_scale, 16, 0);
    CHECK_STR(wt_topk_method(&hp), "group_limited_greedy");
    /* the same groups under greedy: routing ignores them */
    CHECK_EQ(json_with(v2_5, "topk_method", "\"greedy\"", &hp, err), 0);
    CHECK_EQ(hp.n_group, 1);
    CHECK_EQ(hp.topk_group, 1);
    /* no topk_method: HF's V2 default, greedy */
    CHECK_EQ(json_with(v2_5, "topk_method", "null", &hp, err), 0);
    CHECK_EQ(hp.n_group, 1);
    /* renormalized V2 weights are not scaled */
    CHECK_EQ(json_with(v2_5, "norm_topk_prob", "true", &hp, err), 0);
    CHECK_NEAR(hp.routed_scale, 1, 0);
    CHECK_EQ(hp.norm_topk_prob, 1);

    static const struct {
        const char *key, *val;
        int rc;
    } bad[] = {{"topk_method", "\"static_hash\"", ERR_UNSUPPORTED},
               {"topk_method", "\"noaux_tc\"", ERR_UNSUPPORTED},
               {"topk_method", "3", ERR_FORMAT},
               {"scoring_func", "\"sigmoid\"", ERR_UNSUPPORTED},
               {"scoring_func", "\"sqrtsoftplus\"", ERR_UNSUPPORTED},
               {"topk_group", "9", ERR_FORMAT}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_EQ(json_with(v2_5, bad[i].key, bad[i].val, &hp, err), bad[i].rc);
        fprintf(stderr, "%s = %s: %s\n", bad[i].key, bad[i].val, err);
        CHECK_CONTAINS(err, bad[i].key);
    }

    /* random routing setups round-trip through wt_hparams_to_json */
    uint64_t r = seed ^ 0x9e3779b97f4a7c15ull;
    for (int it = 0; it < 200; it++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        struct wt_hparams a;
        CHECK_EQ(wt_hparams_from_json_text(v2_lite, strlen(v2_lite), &a, err), 0);
        static const int groups[] = {1, 2, 4, 8, 16};
        a.n_routed = 16 * (1 + (int)(r >> 40) % 16);
        a.n_group = groups[(r >> 20) % 5];
        a.topk_group = 1 + (int)((r >> 8) % (uint64_t)a.n_group);
        a.top_k = 1 + (int)((r >> 30) % 6);
        a.scoring = (r >> 50) & 1 ? WT_SCORE_SIGMOID : WT_SCORE_SOFTMAX;
        a.norm_topk_prob = (int)(r >> 52) & 1;
        a.routed_scale = 0.5f * (float)(1 + (r >> 54) % 8);
        a.q_lora_rank = (r >> 57) & 1 ? 512 : 0;
        snprintf(a.arch, sizeof a.arch, "%s", a.scoring ? "deepseek_v2" : "deepseek_v3");
        if (a.scoring == WT_SCORE_SOFTMAX && a.norm_topk_prob && a.top_k > 1) a.routed_scale = 1;
        if (a.n_group == 1) a.topk_group = 1;
        char *j = wt_hparams_to_json(&a, 0);
        CHECK(j != NULL);
        rc = wt_hparams_from_json_text(j, strlen(j), &hp, err);
        if (rc) fprintf(stderr, "%s\n%s\n", err, j);
        CHECK_EQ(rc, 0);
        CHECK_STR(hp.arch, a.arch);
        CHECK_EQ(hp.scoring, a.scoring);
        CHECK_EQ(hp.n_group, a.n_group);
        CHECK_EQ(hp.topk_group, a.topk_group);
        CHECK_EQ(hp.top_k, a.top_k);
        CHECK_EQ(hp.n_routed, a.n_routed);
        CHECK_EQ(hp.norm_topk_prob, a.norm_topk_prob);
        CHECK_EQ(hp.q_lora_rank, a.q_lora_rank);
        CHECK_NEAR(hp.routed_scale, a.routed_scale, 0);
        free(j);
    }
}

/* V2-Lite's config with `"quantization_config": qc` appended */
static int with_qc(const char *qc, struct wt_hparams *hp, char *err)
{
    char buf[4096];
    size_t n = strlen(v2_lite);
    snprintf(buf, sizeof buf, "%.*s, \"quantization_config\": %s}", (int)(n - 1), v2_lite, qc);
    return wt_hparams_from_json_text(buf, strlen(buf), hp, err);
}

static void check_scale_fmt(void)
{
    struct wt_hparams hp;
    char err[ERR_LEN] = "";
    /* the quantization_config of DeepSeek's ue8m0 checkpoints (V3.1 and later) */
    CHECK_EQ(with_qc("{\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                     "\"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\", "
                     "\"weight_block_size\": [128, 128]}",
                     &hp, err),
             0);
    CHECK_EQ(hp.fp8_ue8m0, 1);
    char *j = wt_hparams_to_json(&hp, 1);
    CHECK(j && strstr(j, "\"scale_fmt\": \"ue8m0\""));
    struct wt_hparams back;
    CHECK_EQ(wt_hparams_from_json_text(j, strlen(j), &back, err), 0);
    CHECK_EQ(back.fp8_ue8m0, 1);
    free(j);
    /* V3 / R1: no scale_fmt; null; no quantization_config at all */
    CHECK_EQ(with_qc("{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\"}", &hp, err), 0);
    CHECK_EQ(hp.fp8_ue8m0, 0);
    j = wt_hparams_to_json(&hp, 1);
    CHECK(j && !strstr(j, "scale_fmt"));
    free(j);
    CHECK_EQ(with_qc("{\"scale_fmt\": null}", &hp, err), 0);
    CHECK_EQ(hp.fp8_ue8m0, 0);
    CHECK_EQ(with_qc("null", &hp, err), 0);
    CHECK_EQ(hp.fp8_ue8m0, 0);
    CHECK_EQ(wt_hparams_from_json_text(v2_lite, strlen(v2_lite), &hp, err), 0);
    CHECK_EQ(hp.fp8_ue8m0, 0);
    static const struct {
        const char *qc;
        int rc;
    } bad[] = {{"{\"scale_fmt\": \"e8m0\"}", ERR_UNSUPPORTED},
               {"{\"scale_fmt\": \"UE8M0\"}", ERR_UNSUPPORTED},
               {"{\"scale_fmt\": \"fp32\"}", ERR_UNSUPPORTED},
               {"{\"scale_fmt\": \"\"}", ERR_UNSUPPORTED},
               {"{\"scale_fmt\": 8}", ERR_FORMAT},
               {"{\"scale_fmt\": true}", ERR_FORMAT}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_EQ(with_qc(bad[i].qc, &hp, err), bad[i].rc);
        fprintf(stderr, "quantization_config %s: %s\n", bad[i].qc, err);
        CHECK_CONTAINS(err, "quantization_config.scale_fmt");
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tandem-test-hparams-%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    struct wt_hparams hp;
    char err[ERR_LEN] = "";
    int rc = read_hp(NULL, 0, &hp, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(hp.n_layers, 2);
    CHECK_EQ(hp.hidden, 64);
    CHECK_EQ(hp.qk_rope, 16);
    CHECK_EQ(hp.qk_nope, 32);
    CHECK_EQ(hp.yarn, 1);
    CHECK_NEAR(hp.rope_theta, 10000, 0);
    CHECK_NEAR(hp.yarn_mscale, 1, 1e-6);
    CHECK_NEAR(hp.yarn_beta_fast, 32, 0); /* no beta keys: DeepSeek's defaults */
    CHECK_NEAR(hp.yarn_beta_slow, 1, 0);
    CHECK_EQ(hp.scoring, WT_SCORE_SOFTMAX); /* no gating key: an old V2 file */
    CHECK_EQ(hp.fp8_ue8m0, 0);              /* GGUF: no FP8 activations */
    CHECK_STR(hp.arch, "deepseek_v2");
    CHECK_EQ(hp.q_lora_rank, 0); /* no q_lora key: V2-Lite's plain q_proj */
    CHECK_EQ(hp.n_group, 1);

    /* the beta keys, when present, are what RoPE gets */
    unsigned long long seed = check_seed();
    check_config_json(seed);
    check_scale_fmt();
    float bf = 2.0f + (float)(seed % 1000) / 16.0f, bs = 0.25f + (float)(seed / 1000 % 64) / 32.0f;
    CHECK_EQ(read_hp("rope.scaling.yarn_beta_fast", bf, &hp, err), 0);
    CHECK_NEAR(hp.yarn_beta_fast, bf, 0);
    CHECK_NEAR(hp.yarn_beta_slow, 1, 0);
    CHECK_EQ(read_hp("rope.scaling.yarn_beta_slow", bs, &hp, err), 0);
    CHECK_NEAR(hp.yarn_beta_slow, bs, 0);
    CHECK_NEAR(hp.yarn_beta_fast, 32, 0);

    const int scoring[3] = {WT_SCORE_SOFTMAX, WT_SCORE_SOFTMAX, WT_SCORE_SIGMOID};
    for (gating = 0; gating < 3; gating++) {
        CHECK_EQ(read_hp(NULL, 0, &hp, err), 0);
        CHECK_EQ(hp.scoring, scoring[gating]);
    }
    CHECK_STR(hp.arch, "deepseek_v3"); /* gating 2 (sigmoid), the last one read */
    /* V2 / V2.5's shape without the group keys (older converters): 8 groups keeping 3 */
    more_keys[0] = "expert_count";
    more_vals[0] = 160;
    more_keys[1] = "expert_used_count";
    more_vals[1] = 6;
    more_keys[2] = "embedding_length";
    more_vals[2] = 5120;
    more_keys[3] = "expert_feed_forward_length";
    more_vals[3] = 1536;
    gating = 1;
    CHECK_EQ(read_hp(NULL, 0, &hp, err), 0);
    CHECK_EQ(hp.hidden, 5120);
    CHECK_EQ(hp.n_group, 8);
    CHECK_EQ(hp.topk_group, 3);
    more_keys[4] = "expert_group_count"; /* present: taken as written */
    more_vals[4] = 1;
    CHECK_EQ(read_hp(NULL, 0, &hp, err), 0);
    CHECK_EQ(hp.n_group, 1);
    more_keys[0] = NULL;
    gating = 3; /* llama.cpp's softmax_weight: not a DeepSeek gating */
    CHECK_EQ(read_hp(NULL, 0, &hp, err), ERR_FORMAT);
    CHECK_CONTAINS(err, "expert_gating_func");
    gating = -1;

    expect_bad("rope.freq_base", 0);
    expect_bad("rope.freq_base", -1);
    expect_bad("rope.freq_base", NAN);
    expect_bad("attention.layer_norm_rms_epsilon", -1e-6f);
    expect_bad("attention.layer_norm_rms_epsilon", INFINITY);
    expect_bad("expert_weights_scale", -2.5f);
    expect_bad("rope.scaling.factor", 0);
    expect_bad("rope.scaling.factor", NAN);
    expect_bad("rope.scaling.yarn_log_multiplier", -0.1f);
    expect_bad("rope.scaling.yarn_log_multiplier", 1e9f);
    expect_bad("rope.scaling.yarn_beta_fast", 0);
    expect_bad("rope.scaling.yarn_beta_fast", NAN);
    expect_bad("rope.scaling.yarn_beta_slow", -1);

    char p[512];
    snprintf(p, sizeof p, "%s/h.gguf", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}
