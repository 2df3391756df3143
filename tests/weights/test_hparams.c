/* test_hparams.c - GGUF deepseek2.* metadata -> wt_hparams: a minimal valid header reads back;
 * out-of-range or non-finite float keys (rope base, RMS epsilon, expert weight scale, YaRN
 * factor, log multiplier and betas) and out-of-range integer keys give ERR_FORMAT naming the key.
 * rope.scaling.yarn_beta_fast/_slow are read when present (random values, TANDEM_TEST_SEED),
 * 32/1 otherwise; expert_gating_func absent or 0 means softmax (llama.cpp), 2 sigmoid. */
#include "check.h"
#include "common/err.h"
#include "engine/weights/gguf.h"
#include "engine/weights/weights_internal.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
static int gating = -1; /* >= 0: write deepseek2.expert_gating_func */

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
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof k, "deepseek2.%s", ints[i]);
        CHECK_EQ(gguf_writer_set_u32(w, k, vals[i]), 0);
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

    /* the beta keys, when present, are what RoPE gets */
    unsigned long long seed = check_seed();
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
