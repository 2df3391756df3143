/* amx/fill.c - the amx column of the ops table: the avx512 column (already filled by dispatch.c)
 * plus AMX-INT8 multi-token kernels, which hand small token counts back to the avx512 column's
 * kernels. One line per kernel: deleting a line leaves that type on its avx512 entry.
 * Built into its own static library with the ISA's -m flags (kernels/cpu/meson.build), so
 * nothing here may run unless dispatch.c found AMX (and the OS granted tile data) on this CPU.
 * Thread: called once per table from dispatch.c under pthread_once. */
#include "kernels/cpu/amx/amx.h"
#include "kernels/cpu/cpuq.h"

cpuq_amx_mm_fn cpuq__amx_small[QTYPE_COUNT_];
__thread int cpuq__amx_kbytes;

void cpuq__fill_amx(struct cpuq_ops *o)
{
    for (int t = 0; t < QTYPE_COUNT_; t++) cpuq__amx_small[t] = o->type[t].mul_mat;
    o->type[QTYPE_Q4_K].mul_mat = cpuq_mul_mat_q4_k_q8_k_amx;
    o->type[QTYPE_Q5_K].mul_mat = cpuq_mul_mat_q5_k_q8_k_amx;
    o->type[QTYPE_Q6_K].mul_mat = cpuq_mul_mat_q6_k_q8_k_amx;
    o->type[QTYPE_IQ4_XS].mul_mat = cpuq_mul_mat_iq4_xs_q8_k_amx;
    o->type[QTYPE_Q8_0].mul_mat = cpuq_mul_mat_q8_0_q8_0_amx;
}
