/* tests/kernels/emu/immintrin.h - for scripts/amx-emu-check.sh only: found before the compiler's
 * own header, it adds SIMDe's portable AVX-512 (native names) and a plain-C AMX tile unit
 * (emu_extra.h) on top of the real AVX2 intrinsics, so the AVX-512 and AMX kernels run on an
 * AVX2-only machine, slowly, for correctness checks. Never part of the meson build. */
#ifndef TANDEM_EMU_IMMINTRIN_H
#define TANDEM_EMU_IMMINTRIN_H
#include_next <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <stdint.h>
#include <string.h>

#include "emu_extra.h"
#endif
