#!/bin/sh
# amx-emu-check.sh [NAME] - run the AMX (and AVX-512) multi-token kernels on a machine without
# them: kernels/cpu/amx/*.c and avx512/*.c are compiled with -mavx2 through the emulating
# immintrin.h of tests/kernels/emu/ (SIMDe's AVX-512 + a plain-C tile unit), linked with the
# scalar reference of build/ or $TANDEM_BUILD (run ninja there first), and checked by
# tests/kernels/emu/emu_check.c against it. A development aid for writing AMX code on the AVX2 developer machine;
# the real tests (test_mul_mat_tiles, test_simd_kernels) still have to pass on an AMX host.
# Needs SIMDe 0.7 headers (Debian: apt-get install libsimde-dev). NAME: only matching cases.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
[ -f /usr/include/simde/x86/avx512.h ] || { echo "needs libsimde-dev" >&2; exit 77; }
bld=${TANDEM_BUILD:-$root/build}
out=$root/build-emu
mkdir -p "$out"
cflags="-O2 -std=gnu11 -mavx2 -mfma -mf16c -ffp-contract=off -w -Wno-psabi -I$root -I$bld"
objs=""
for f in $(cd "$root/kernels/cpu" && ls amx/*.c avx512/*.c); do
  o=$out/$(echo "$f" | tr / _).o
  # shellcheck disable=SC2086
  cc $cflags -I"$root/tests/kernels/emu" -c "$root/kernels/cpu/$f" -o "$o"
  objs="$objs $o"
done
# shellcheck disable=SC2086
cc $cflags -c "$root/tests/kernels/emu/emu_check.c" -o "$out/emu_check.o"
# shellcheck disable=SC2086
cc -no-pie -o "$out/emu_check" "$out/emu_check.o" $objs -Wl,--start-group \
  "$bld/libtandem_kernels_cpu.a" "$bld/kernels/cpu/libcpuq_avx2.a" \
  "$bld/libtandem_common.a" -Wl,--end-group -lm -lpthread
rc=0
"$out/emu_check" "$@" > "$out/emu_check.log" 2>&1 || rc=$?
grep -v '^<' "$out/emu_check.log"
exit $rc
