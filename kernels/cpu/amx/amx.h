/* amx/amx.h - AMX tile set-up and the AMX kernels (internal to kernels/cpu/amx).
 *
 * Tile registers used by the kernels (palette 1): 0 and 3 = C (16 x 16 int32), 1 and 4 = A
 * (16 weight rows x kbytes), 2 and 5 = B (kbytes/4 rows x 16 tokens x 4 bytes). The
 * configuration is per thread; amx_tiles_config() loads it only when this thread's current one
 * (cpuq__amx_kbytes: one thread-local variable for all AMX files, since kernels with different
 * K per tile share a thread) differs, which assumes nothing else on the thread loads or releases
 * a tile configuration (true in tandem: this is the only AMX code; anything that adds some must
 * call amx_tiles_config before each use, or the cache must go). Linux must have granted XTILEDATA
 * to the process (dispatch.c does, before the AMX table can be chosen).
 */
#ifndef TANDEM_CPUQ_AMX_H
#define TANDEM_CPUQ_AMX_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/qtype.h"

#define AMX_MIN_TOK 4 /* fewer tokens per call: the AVX-512 kernels are faster */
#define AMX_RB 128    /* weight rows per packed-token reuse block */

struct amx_tilecfg {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* A tiles of kbytes columns (K per TDPBUSD = kbytes), B tiles of kbytes/4 rows. Tiles 0-2 and
 * 3-5: C (16 x 64 bytes), A (16 x kbytes), B (kbytes/4 x 64 bytes). */
extern __thread int cpuq__amx_kbytes; /* amx/fill.c; 0: none loaded on this thread */

static inline void amx_tiles_config(int kbytes)
{
    if (cpuq__amx_kbytes == kbytes) return;
    struct amx_tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette_id = 1;
    for (int t = 0; t < 6; t += 3) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
        c.colsb[t + 1] = (uint16_t)kbytes;
        c.rows[t + 1] = 16;
        c.colsb[t + 2] = 64;
        c.rows[t + 2] = (uint8_t)(kbytes / 4);
    }
    _tile_loadconfig(&c);
    cpuq__amx_kbytes = kbytes;
}

/* Multi-token kernels (struct cpuq_type_ops.mul_mat); below AMX_MIN_TOK tokens they call the
 * avx512 column's kernel (cpuq__amx_small). amx/kquants.c: Q4_K, Q5_K, Q6_K, IQ4_XS; amx/q8_0.c:
 * Q8_0. */
#define CPUQ_AMX_MUL_MAT(name)                                                                     \
    void cpuq_mul_mat_##name(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,          \
                             const void *act, size_t act_row_bytes, int64_t ntok, float *y,        \
                             int64_t ldy);
CPUQ_AMX_MUL_MAT(q4_k_q8_k_amx)
CPUQ_AMX_MUL_MAT(q5_k_q8_k_amx)
CPUQ_AMX_MUL_MAT(q6_k_q8_k_amx)
CPUQ_AMX_MUL_MAT(iq4_xs_q8_k_amx)
CPUQ_AMX_MUL_MAT(q8_0_q8_0_amx)
#undef CPUQ_AMX_MUL_MAT

/* The avx512 column's mul_mat of each type, which the AMX kernels call below AMX_MIN_TOK tokens:
 * set once by cpuq__fill_amx (under dispatch.c's pthread_once, before any table is handed out),
 * read-only after. */
typedef void (*cpuq_amx_mm_fn)(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                               const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                               int64_t ldy);
extern cpuq_amx_mm_fn cpuq__amx_small[QTYPE_COUNT_];

#endif
