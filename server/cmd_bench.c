/* cmd_bench.c - `tandem bench <name> [options]`: dispatch to the benchmark of each area.
 *
 * Each benchmark lives beside the code it measures and prints its own ceiling (docs/model.md §4);
 * this file only picks one by name. Names without a benchmark yet answer "unknown benchmark".
 */
#include "cmd.h"

#include "kernels/cpu/bench_cpu.h"
#ifdef TANDEM_CUDA
#include "kernels/cuda/bench_gpu.h"
#endif

#include <stdio.h>
#include <string.h>

struct bench {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct bench benches[] = {
    {"cpu", cpuq_bench_cpu, "DRAM read bandwidth, MoE expert decode/prefill at DeepSeek-V3 shapes"},
#ifdef TANDEM_CUDA
    {"gpu", bench_gpu_main,
     "HBM copy bandwidth, FP8 linears at DeepSeek-V3 shapes vs cuBLASLt, MLA decode"},
#endif
};
#define N_BENCHES (int)(sizeof benches / sizeof benches[0])

int cmd_bench(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tandem bench <name> [options]\nbenchmarks:\n");
        for (int i = 0; i < N_BENCHES; i++)
            fprintf(stderr, "  %-10s %s\n", benches[i].name, benches[i].summary);
        return 2;
    }
    for (int i = 0; i < N_BENCHES; i++)
        if (strcmp(argv[1], benches[i].name) == 0) return benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tandem bench: unknown benchmark '%s'\n", argv[1]);
    return 2;
}
