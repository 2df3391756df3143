/* ref/iq_grids.c - the i-quant lookup tables (ref/iq_grids.h) for the CPU, defined from the data
 * in ref/iq_grids.inc (ggml's format tables). Read-only data: thread-safe. */
#include "kernels/cpu/ref/iq_grids.h"

#define IQ_TABLE(type, name, n, ...) const type cpuq_##name[n] = {__VA_ARGS__};
#include "kernels/cpu/ref/iq_grids.inc"
#undef IQ_TABLE
