/* test_inspect.c - `tandem convert synth` -> `tandem inspect` round trips through the binary:
 *   - tiny: human and --json output, --tensors lists every tensor with its placement;
 *   - v3-slice with 1 dense + 2 MoE layers and 16 routed experts (all-zero sparse files, so
 *     nothing big is written): per-layer parameter counts equal the ones computed here from the
 *     shapes in docs/model.md §1;
 *   - v2-lite-slice and v2-slice (DeepSeek-V2-Lite's and V2 / V2.5's true dims, 1 dense + 1 MoE
 *     layer, zero weights): attention with a plain q_proj (V2-Lite) or q LoRA (V2), no
 *     correction bias, 2 shared experts, the routing setup in the hyperparameters;
 *   - errors: missing directory, bad option, unknown preset -> non-zero exit with a message. */
#include "check.h"

#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *bin;
static char root[256];

static char *run(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    CHECK(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static json_t *inspect_json(const char *dir, const char *extra)
{
    char cmd[1024];
    int st;
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --json %s 2>/dev/null", bin, dir, extra);
    char *out = run(cmd, &st);
    CHECK_EQ(st, 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fprintf(stderr, "bad JSON from inspect: %s\n%s\n", je.text, out);
    CHECK(j);
    free(out);
    return j;
}

static long long jget(json_t *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = o;
    for (char *s = strtok(buf, "."); s; s = strtok(NULL, ".")) {
        if (json_is_array(v)) v = json_array_get(v, (size_t)atoi(s));
        else v = json_object_get(v, s);
        if (!v) {
            fprintf(stderr, "no %s in inspect output\n", path);
            exit(1);
        }
    }
    return json_is_integer(v) ? json_integer_value(v) : (long long)json_number_value(v);
}

int main(void)
{
    bin = getenv("TANDEM_BIN");
    if (!bin) SKIP("TANDEM_BIN not set");
    snprintf(root, sizeof root, "/tmp/tandem-test-inspect-%d", (int)getpid());
    CHECK(mkdir(root, 0700) == 0);
    char cmd[2048], dir[512];
    int st;

    /* ---- tiny */
    snprintf(dir, sizeof dir, "%s/tiny", root);
    snprintf(cmd, sizeof cmd, "'%s' convert synth --preset tiny --seed 7 --out '%s' 2>&1", bin,
             dir);
    free(run(cmd, &st));
    CHECK_EQ(st, 0);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --tensors 2>/dev/null", bin, dir);
    char *out = run(cmd, &st);
    CHECK_EQ(st, 0);
    CHECK_CONTAINS(out, "deepseek_v3: 3 layers (1 dense, 2 MoE)");
    CHECK_CONTAINS(out, "blk.1.ffn_gate_exps.weight");
    CHECK_CONTAINS(out, "q8_0");
    CHECK_CONTAINS(out, "f8_e4m3");
    CHECK_CONTAINS(out, "hybrid: GPU");
    free(out);
    char tc[600];
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    json_t *cfg = json_load_file(tc, 0, NULL);
    CHECK(cfg);
    CHECK_CONTAINS(json_string_value(json_object_get(cfg, "chat_template")), "<｜Assistant｜>");
    CHECK_STR(json_string_value(json_object_get(cfg, "bos_token")), "<｜begin▁of▁sentence｜>");
    json_decref(cfg);
    json_t *j = inspect_json(dir, "--tensors");
    CHECK_EQ(jget(j, "hparams.hidden_size"), 256);
    CHECK_EQ(jget(j, "hparams.n_routed_experts"), 8);
    json_t *tl = json_object_get(j, "tensor_list");
    CHECK(json_array_size(tl) > 30);
    long long gpu = 0, cpu = 0;
    for (size_t i = 0; i < json_array_size(tl); i++) {
        json_t *t = json_array_get(tl, i);
        long long b = json_integer_value(json_object_get(t, "bytes"));
        if (!strcmp(json_string_value(json_object_get(t, "placement")), "cpu")) cpu += b;
        else gpu += b;
    }
    CHECK_EQ(gpu, jget(j, "totals.gpu_bytes"));
    CHECK_EQ(cpu, jget(j, "totals.cpu_expert_bytes"));
    CHECK_EQ(jget(j, "memory.kv_bytes_per_token"), 576 * 2 * 3);
    json_decref(j);

    /* ---- v3-slice: 1 dense + 2 MoE, 16 experts, shapes only */
    snprintf(dir, sizeof dir, "%s/v3", root);
    snprintf(cmd, sizeof cmd,
             "'%s' convert synth --preset v3-slice --dense-layers 1 --moe-layers 2 "
             "--experts-n 16 --zero --seed 1 --out '%s' 2>&1",
             bin, dir);
    free(run(cmd, &st));
    CHECK_EQ(st, 0);
    j = inspect_json(dir, "--context 4096");
    /* spec section 2 shapes (V3: D 7168, 128 heads, q_lora 1536, kv_lora 512, nope 128, rope 64,
     * v 128, dense inter 18432, expert inter 2048) */
    long long D = 7168, H = 128, QL = 1536, KL = 512, NOPE = 128, ROPE = 64, V = 128;
    long long attn = QL * D + QL + H * (NOPE + ROPE) * QL + (KL + ROPE) * D + KL +
                     H * (NOPE + V) * KL + D * H * V;
    CHECK_EQ(attn, 187107328);
    long long dense = 3 * 18432 * D, shared = 3 * 2048 * D, expert = 3 * 2048 * D;
    long long router = 16 * D + 16;
    CHECK_EQ(jget(j, "layers.0.params.attention"), attn);
    CHECK_EQ(jget(j, "layers.0.params.dense_ffn"), dense);
    CHECK_EQ(jget(j, "layers.0.params.norms"), 2 * D);
    CHECK_EQ(jget(j, "layers.0.params.router"), 0);
    for (int l = 1; l <= 2; l++) {
        char k[64];
        snprintf(k, sizeof k, "layers.%d.params.attention", l);
        CHECK_EQ(jget(j, k), attn);
        snprintf(k, sizeof k, "layers.%d.params.router", l);
        CHECK_EQ(jget(j, k), router);
        snprintf(k, sizeof k, "layers.%d.params.shared_expert", l);
        CHECK_EQ(jget(j, k), shared);
        snprintf(k, sizeof k, "layers.%d.params.routed_expert", l);
        CHECK_EQ(jget(j, k), expert);
        snprintf(k, sizeof k, "layers.%d.params.routed_experts", l);
        CHECK_EQ(jget(j, k), 16 * expert);
        snprintf(k, sizeof k, "layers.%d.params.dense_ffn", l);
        CHECK_EQ(jget(j, k), 0);
    }
    long long vocab = 129280;
    CHECK_EQ(jget(j, "totals.params"),
             2 * vocab * D + D + 3 * (attn + 2 * D) + dense + 2 * (router + shared + 16 * expert));
    CHECK_EQ(jget(j, "memory.kv_bytes"), 4096LL * 576 * 2 * 3);
    /* q8_0 experts: 34 bytes per 32 weights */
    CHECK_EQ(jget(j, "totals.cpu_expert_bytes"), 2 * 16 * expert / 32 * 34);
    json_decref(j);

    /* ---- DeepSeek-V2 shapes: V2-Lite (q_proj, 64 experts, greedy) and V2 / V2.5 (q LoRA, 160
     * experts in 8 groups keeping 3, scale 16); 1 dense + 1 MoE layer, zero weights */
    static const struct {
        const char *preset;
        long long D, H, QL, inter, I, E, groups, topk_groups, scale;
        const char *method;
    } v2s[] = {{"v2-lite-slice", 2048, 16, 0, 10944, 1408, 64, 1, 1, 1, "greedy"},
               {"v2-slice", 5120, 128, 1536, 12288, 1536, 160, 8, 3, 16, "group_limited_greedy"}};
    for (int c = 0; c < 2; c++) {
        snprintf(dir, sizeof dir, "%s/%s", root, v2s[c].preset);
        snprintf(cmd, sizeof cmd,
                 "'%s' convert synth --preset %s --dense-layers 1 --moe-layers 1 --zero "
                 "--out '%s' 2>&1",
                 bin, v2s[c].preset, dir);
        free(run(cmd, &st));
        CHECK_EQ(st, 0);
        j = inspect_json(dir, "");
        long long d = v2s[c].D, h = v2s[c].H, ql = v2s[c].QL, e = v2s[c].E, i = v2s[c].I;
        long long q = ql ? ql * d + ql + h * (NOPE + ROPE) * ql : h * (NOPE + ROPE) * d;
        long long at = q + (KL + ROPE) * d + KL + h * (NOPE + V) * KL + d * h * V;
        CHECK_EQ(jget(j, "layers.0.params.attention"), at);
        CHECK_EQ(jget(j, "layers.0.params.dense_ffn"), 3 * v2s[c].inter * d);
        CHECK_EQ(jget(j, "layers.1.params.attention"), at);
        CHECK_EQ(jget(j, "layers.1.params.router"), e * d); /* no correction bias */
        CHECK_EQ(jget(j, "layers.1.params.shared_expert"), 3 * 2 * i * d);
        CHECK_EQ(jget(j, "layers.1.params.routed_experts"), e * 3 * i * d);
        CHECK_EQ(jget(j, "hparams.q_lora_rank"), ql);
        CHECK_EQ(jget(j, "hparams.n_group"), v2s[c].groups);
        CHECK_EQ(jget(j, "hparams.topk_group"), v2s[c].topk_groups);
        CHECK_EQ(jget(j, "hparams.num_experts_per_tok"), 6);
        CHECK_EQ(jget(j, "hparams.vocab_size"), 102400);
        json_t *hj = json_object_get(j, "hparams");
        CHECK_STR(json_string_value(json_object_get(hj, "arch")), "deepseek_v2");
        CHECK_STR(json_string_value(json_object_get(hj, "scoring_func")), "softmax");
        CHECK_STR(json_string_value(json_object_get(hj, "topk_method")), v2s[c].method);
        CHECK_NEAR(json_number_value(json_object_get(hj, "routed_scaling_factor")), v2s[c].scale,
                   0);
        json_decref(j);
    }

    /* ---- errors */
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s/nope' 2>&1", bin, root);
    out = run(cmd, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(out, "nope");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect --bogus 2>&1", bin);
    free(run(cmd, &st));
    CHECK_EQ(st, 2);
    snprintf(cmd, sizeof cmd, "'%s' convert synth --preset huge --out '%s/x' 2>&1", bin, root);
    out = run(cmd, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(out, "huge");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' convert synth --preset tiny --experts q4_K --out '%s/x' 2>&1",
             bin, root);
    out = run(cmd, &st); /* tiny's dims are multiples of 256: q4_K works */
    CHECK_EQ(st, 0);
    free(out);
    snprintf(dir, sizeof dir, "%s/mix", root);
    snprintf(cmd, sizeof cmd, "'%s' convert synth --preset tiny --experts q4_K_M --out '%s' 2>&1",
             bin, dir);
    free(run(cmd, &st));
    CHECK_EQ(st, 0);
    j = inspect_json(dir, "");
    CHECK_EQ(jget(j, "totals.bytes_by_type.q6_K"), 2 * 8 * 256 * 256 / 256 * 210); /* down */
    CHECK_EQ(jget(j, "totals.bytes_by_type.q4_K"), 2 * 2 * 8 * 256 * 256 / 256 * 144);
    json_decref(j);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
    printf("inspect ok\n");
    return 0;
}
