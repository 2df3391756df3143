/* main.c - the `tandem` binary: dispatch to a subcommand, --help and --version for each.
 *
 * Usage: tandem <command> [options]. Every command also accepts the configuration flags of
 * docs/configuration.md (--config FILE, --section.key=value); commands load them with cfg_load().
 * This is the only file that calls exit() (through main's return).
 */
#include "cmd.h"

#include <stdio.h>
#include <string.h>

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *usage;
};

static const struct command commands[] = {
    {"serve", cmd_serve, "run the OpenAI-compatible HTTP server",
     "tandem serve --model DIR [--config FILE] [--section.key=value ...] [--print-config]\n"
     "  Loads the model and serves /v1/chat/completions, /v1/completions, /v1/models, /health,\n"
     "  /metrics, /tokenize and /detokenize on server.host:server.port (127.0.0.1:8080).\n"
     "  --print-config   print the effective configuration and exit\n"},
    {"convert", cmd_convert, "write models: merge FP8 + GGUF, or synthesize random test models",
     "tandem convert synth --preset PRESET|CONFIG.json --out DIR [--seed N]\n"
     "                     [--experts TYPE] [--dense-layers N] [--moe-layers N] [--experts-n N]\n"
     "                     [--vocab N]   (PRESET: tiny, v3-slice, tiny-v2, v2-lite-slice, "
     "v2-slice,\n"
     "                     tiny-moonlight, tiny-kimi)\n"
     "tandem convert merge --fp8 DIR --gguf DIR --out DIR\n"
     "tandem convert dequant --model DIR --out DIR   (float safetensors for reference tools)\n"},
    {"inspect", cmd_inspect, "describe a model: hyperparameters, tensors, memory plan",
     "tandem inspect DIR|FILE [--tensors] [--json]\n"},
    {"chat", cmd_chat, "chat with a model in the terminal, or generate from a prompt",
     "tandem chat --model DIR                       interactive chat (DeepSeek template)\n"
     "tandem chat --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--seed N] "
     "[--raw]\n"},
    {"bench", cmd_bench, "benchmarks: CPU kernels, tokenizer, GPU kernels, serving",
     "tandem bench cpu|tokenizer|gpu|model [options]\n"},
    {"tokenize", cmd_tokenize, "text on stdin -> JSON array of token ids",
     "tandem tokenize --model DIR [--special]\n"},
    {"detokenize", cmd_detokenize, "JSON array of token ids on stdin -> text",
     "tandem detokenize --model DIR\n"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f,
            "tandem %s - DeepSeek-V3/R1 MoE inference server (GPU + CPU hybrid)\n\n"
            "usage: tandem <command> [options]\n\ncommands:\n",
            TANDEM_VERSION);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'tandem <command> --help' for details. Configuration: docs/configuration.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("tandem %s\n", TANDEM_VERSION);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        const struct command *c = &commands[i];
        if (strcmp(argv[1], c->name) != 0) continue;
        for (int j = 2; j < argc; j++) {
            if (strcmp(argv[j], "--") == 0) break;
            if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
                printf("tandem %s - %s\n\n%s", c->name, c->summary, c->usage);
                return 0;
            }
            if (strcmp(argv[j], "--version") == 0) {
                printf("tandem %s %s\n", c->name, TANDEM_VERSION);
                return 0;
            }
        }
        return c->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "tandem: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
