/* bench_gpu_main.c - standalone driver of the GPU kernel benchmark (kernels/cuda/bench_gpu.h);
 * `tandem bench gpu` calls the same bench_gpu_main. */
#include "kernels/cuda/bench_gpu.h"

int main(int argc, char **argv) { return bench_gpu_main(argc, argv); }
