/* bench_gpu.h - the GPU kernel benchmark (`tandem bench gpu`, tests/gpu/bench_gpu).
 *
 * Measures the HBM copy bandwidth, then every DeepSeek-V3 FP8 linear shape at M = 1, 4, 8, 16,
 * 64, 512, 4096 with the small-M kernel (M <= 16) and cuBLASLt (M padded to 4) in the same run,
 * the MLA decode kernel, and MLA prefill as GEMMs (cuk_mla_prefill, n_q = 2048, 8192, 16384 from
 * position 0) beside the decode kernel on the same causal rows; prints the full table, then a
 * short summary table last.
 * Options: --out FILE (also write the full table there), --quick (fewer shapes and sizes).
 * Returns 0, 77 when no GPU is present, 1 on error. Uses the current CUDA device; not
 * thread-safe with other GPU work (it times the whole device).
 */
#ifndef TANDEM_BENCH_GPU_H
#define TANDEM_BENCH_GPU_H

#ifdef __cplusplus
extern "C" {
#endif

int bench_gpu_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
