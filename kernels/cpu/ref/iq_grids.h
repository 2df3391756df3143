/* ref/iq_grids.h - the lookup tables of the i-quant formats (ref/iq_grids.c), shared by the scalar
 * reference and the SIMD kernels. Every index a block can encode is in range by construction:
 * IQ2_XXS / IQ3_XXS 8 bits, IQ2_XS / IQ3_S 9 bits, IQ2_S 10 bits, IQ1_S / IQ1_M 11 bits, sign
 * patterns 7 bits. Read-only data: thread-safe.
 */
#ifndef TANDEM_CPUQ_IQ_GRIDS_H
#define TANDEM_CPUQ_IQ_GRIDS_H

#include <stdint.h>

/* 7 sign bits -> 8 sign bits with an even number of set bits (bit 7 = parity of the 7) */
extern const uint8_t cpuq_iq_ksigns[128];
/* 8 unsigned magnitudes per entry (bytes of the u64, element j in byte j) */
extern const uint64_t cpuq_iq2xxs_grid[256];
extern const uint64_t cpuq_iq2xs_grid[512];
extern const uint64_t cpuq_iq2s_grid[1024];
/* 4 unsigned magnitudes per entry */
extern const uint32_t cpuq_iq3xxs_grid[256];
extern const uint32_t cpuq_iq3s_grid[512];
/* 8 int8 values in {-1, 0, +1} per entry */
extern const uint64_t cpuq_iq1s_grid[2048];

#define CPUQ_IQ1_DELTA 0.125f /* IQ1_S / IQ1_M: values are (grid +- delta) * scale */

#endif
