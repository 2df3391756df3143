/* cmd_convert.c - `tandem convert synth|merge|dequant|quantize`: argument parsing around
 * engine/weights/convert.h. Runs on the main thread (the conversions use worker threads).
 *
 *   synth    --preset PRESET|CONFIG.json --out DIR (PRESET: tiny, v3-slice, tiny-v2,
 *            v2-lite-slice, v2-slice, tiny-moonlight, tiny-kimi)
 *            [--seed N] [--experts TYPE] [--dense-layers N] [--moe-layers N] [--experts-n N]
 *            [--vocab N] [--zero] [--threads N]
 *            [--mla-layout kv_b|split] [--split-count N] [--layout no-merge|gguf]
 *            [--linears TYPE]
 *   (--mla-layout split: llama.cpp's attn_k_b / attn_v_b instead of kv_b_proj, same values;
 *    --split-count N: the GGUF as a gguf-split set of N files;
 *    --layout gguf: the whole model as llama.cpp's GGUF alone, 2-D weights of --linears TYPE,
 *    default q8_0)
 *   (--experts takes a GGML type name, q4_K_M: gate/up q4_K + down q6_K as llama.cpp's mix, or
 *    GATEUP/DOWN for another mix, e.g. iq2_xxs/iq3_xxs as unsloth's dynamic quants)
 *   merge    --fp8 DIR [--gguf DIR] --out DIR
 *   dequant  --model DIR --out DIR [--dtype f32|bf16] [--threads N]
 *   quantize --model DIR --out DIR [--experts TYPE] [--threads N]
 *
 * The chat template written by synth is tandem's own DeepSeek-V3 Jinja (engine/text/tmpl.h), or
 * for tiny-kimi / tiny-moonlight Kimi's published one with Kimi's tokenizer (synth_tok.c).
 */
#include "cmd.h"

#include "common/err.h"
#include "engine/weights/convert.h"
#include "kernels/cpu/qtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage_text[] =
    "usage: tandem convert synth --preset PRESET|CONFIG.json --out DIR [--seed N]\n"
    "                            [--experts TYPE] [--dense-layers N] [--moe-layers N]\n"
    "                            [--experts-n N] [--vocab N] [--zero | --zero-but-routing]\n"
    "                            [--threads N]\n"
    "                            [--mla-layout kv_b|split] [--split-count N]\n"
    "                            [--layout no-merge|gguf] [--linears TYPE]\n"
    "       (PRESET: tiny, v3-slice, tiny-v2, v2-lite-slice, v2-slice, tiny-moonlight,\n"
    "        tiny-kimi)\n"
    "       tandem convert merge --fp8 DIR [--gguf DIR] --out DIR\n"
    "       tandem convert dequant --model DIR --out DIR [--dtype f32|bf16] [--threads N]\n"
    "       tandem convert quantize --model DIR --out DIR [--experts TYPE] [--threads N]\n";

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x = strtoll(v, &end, 0);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "tandem convert: %s must be an integer in [%lld, %lld]\n", flag, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_type(const char *v, int *out)
{
    if (!strcasecmp(v, "q4_K_M")) {
        *out = WT_EXPERTS_Q4_K_M;
        return 0;
    }
    int t = qtype_from_name(v);
    if (t < 0) {
        fprintf(stderr, "tandem convert: unknown type '%s' (e.g. q4_K, q4_K_M, q8_0, bf16, f32)\n",
                v);
        return -1;
    }
    *out = t;
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *sub = argv[1];
    const char *preset = NULL, *out = NULL, *fp8 = NULL, *gguf = NULL, *model = NULL;
    long long seed = 0, dense = -1, moe = -1, nexp = -1, threads = 0, nsplit = 1, vocab = 0;
    int etype = -1, edown = -1, dtype = QTYPE_F32, zero = 0, mla_split = 0, gguf_only = 0;
    int ltype = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--zero")) {
            zero = 1;
            takes = 0;
        } else if (!strcmp(a, "--zero-but-routing")) {
            zero = 2;
            takes = 0;
        } else if (!v) {
            fprintf(stderr, "tandem convert: %s needs a value\n%s", a, usage_text);
            return 2;
        } else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--fp8")) fp8 = v;
        else if (!strcmp(a, "--gguf")) gguf = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--seed")) {
            if (parse_int(a, v, 0, (long long)(~0ull >> 1), &seed)) return 2;
        } else if (!strcmp(a, "--dense-layers")) {
            if (parse_int(a, v, 0, 1024, &dense)) return 2;
        } else if (!strcmp(a, "--moe-layers")) {
            if (parse_int(a, v, 0, 1024, &moe)) return 2;
        } else if (!strcmp(a, "--experts-n")) {
            if (parse_int(a, v, 1, 4096, &nexp)) return 2;
        } else if (!strcmp(a, "--vocab")) {
            if (parse_int(a, v, 1, 1 << 24, &vocab)) return 2;
        } else if (!strcmp(a, "--split-count")) {
            if (parse_int(a, v, 1, 65535, &nsplit)) return 2;
        } else if (!strcmp(a, "--mla-layout")) {
            if (strcmp(v, "kv_b") && strcmp(v, "split")) {
                fprintf(stderr, "tandem convert: --mla-layout must be kv_b or split\n");
                return 2;
            }
            mla_split = !strcmp(v, "split");
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, v, 0, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--experts")) {
            char gu[32];
            const char *slash = strchr(v, '/');
            snprintf(gu, sizeof gu, "%.*s", slash ? (int)(slash - v) : (int)strlen(v), v);
            if (parse_type(gu, &etype) || (slash && parse_type(slash + 1, &edown))) return 2;
            if (slash && (etype == WT_EXPERTS_Q4_K_M || edown == WT_EXPERTS_Q4_K_M)) {
                fprintf(stderr, "tandem convert: --experts GATEUP/DOWN takes two type names\n");
                return 2;
            }
        } else if (!strcmp(a, "--layout")) {
            if (strcmp(v, "no-merge") && strcmp(v, "gguf")) {
                fprintf(stderr, "tandem convert: --layout must be no-merge or gguf\n");
                return 2;
            }
            gguf_only = !strcmp(v, "gguf");
        } else if (!strcmp(a, "--linears")) {
            if (parse_type(v, &ltype)) return 2;
        } else if (!strcmp(a, "--dtype")) {
            if (parse_type(v, &dtype)) return 2;
            if (dtype != QTYPE_F32 && dtype != QTYPE_BF16) { /* also rejects q4_K_M */
                fprintf(stderr, "tandem convert: --dtype must be f32 or bf16\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tandem convert: unknown option '%s'\n%s", a, usage_text);
            return 2;
        }
        i += takes;
    }
    char err[ERR_LEN] = "";
    int rc;
    if (!strcmp(sub, "synth")) {
        if (!preset || !out) {
            fprintf(stderr, "tandem convert synth: --preset and --out are required\n%s",
                    usage_text);
            return 2;
        }
        struct wt_synth_opts o = {0};
        size_t pl = strlen(preset);
        if (pl > 5 && !strcmp(preset + pl - 5, ".json")) o.config = preset;
        else o.preset = preset;
        o.out = out;
        o.seed = (uint64_t)seed;
        o.experts_type = etype;
        o.dense_layers = (int)dense;
        o.moe_layers = (int)moe;
        o.n_experts = (int)nexp;
        o.vocab = (int)vocab;
        o.zero = zero;
        o.threads = (int)threads;
        o.mla_split = mla_split;
        o.gguf_split = (int)nsplit;
        o.chat_template = NULL; /* the preset's */
        o.experts_down_type = edown;
        o.gguf_only = gguf_only;
        o.linears_type = ltype;
        if (ltype >= 0 && !gguf_only) {
            fprintf(stderr, "tandem convert synth: --linears needs --layout gguf\n");
            return 2;
        }
        rc = wt_synth(&o, err);
    } else if (!strcmp(sub, "merge")) {
        if (!fp8 || !out) {
            fprintf(stderr, "tandem convert merge: --fp8 and --out are required\n%s", usage_text);
            return 2;
        }
        rc = wt_convert_merge(fp8, gguf, out, err);
    } else if (!strcmp(sub, "dequant")) {
        if (!model || !out) {
            fprintf(stderr, "tandem convert dequant: --model and --out are required\n%s",
                    usage_text);
            return 2;
        }
        rc = wt_convert_dequant(model, out, dtype, (int)threads, err);
    } else if (!strcmp(sub, "quantize")) {
        if (!model || !out) {
            fprintf(stderr, "tandem convert quantize: --model and --out are required\n%s",
                    usage_text);
            return 2;
        }
        if (edown >= 0) {
            fprintf(stderr, "tandem convert quantize: --experts takes one type\n");
            return 2;
        }
        rc = wt_convert_quantize(model, out, etype, (int)threads, err);
    } else {
        fprintf(stderr, "tandem convert: unknown conversion '%s'\n%s", sub, usage_text);
        return 2;
    }
    if (rc) {
        fprintf(stderr, "tandem convert %s: %s\n", sub, err[0] ? err : err_message(rc));
        return 1;
    }
    fprintf(stderr, "tandem convert %s: wrote %s\n", sub, out);
    return 0;
}
