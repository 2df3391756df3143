#!/bin/sh
# build-ggml-peer.sh - ggml's CPU backend (static, from a fetched source tree, never committed)
# plus tests/bench/ggml_peer.c as one static binary to carry to the benchmark host.
#   scripts/build-ggml-peer.sh GGML_SRC [spr|avx2]
# spr (default): AVX-512 (F/BW/VL/DQ, VNNI, VBMI, BF16) + AMX-TILE/INT8/BF16 and
#   -march=sapphirerapids -> build-ibin/ggml_peer (runs only on such a CPU);
# avx2: AVX2/FMA/F16C/BMI2 -> build-ibin/ggml_peer_avx2 (runs here, to check the driver).
# GGML_SRC: a checkout or `git archive` of ggml (github ggml-org/ggml); its commit, if known, is
# printed by the binary's caller, not embedded. Uses cmake and the system C/C++ compilers; no
# OpenMP (ggml's own thread pool), so the binary has no runtime dependencies.
set -eu
src=${1:?usage: build-ggml-peer.sh GGML_SRC [spr|avx2]}
variant=${2:-spr}
root=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "$src" && pwd)
bdir=$root/build-ggml/$variant   # not in build-ibin: that folder is carried to the device
common="-DBUILD_SHARED_LIBS=OFF -DGGML_BACKEND_DL=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_SSE42=ON"
case $variant in
spr)
  flags="-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON
    -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON"
  march=-march=sapphirerapids
  out=$root/build-ibin/ggml_peer ;;
avx2)
  flags=""
  march="-mavx2 -mfma -mf16c -mbmi2"
  out=$root/build-ibin/ggml_peer_avx2 ;;
*) echo "unknown variant $variant" >&2; exit 2 ;;
esac
mkdir -p "$bdir" "$root/build-ibin"
# shellcheck disable=SC2086
cmake -S "$src" -B "$bdir" $common $flags >"$bdir.cmake.log" 2>&1 ||
  { tail -30 "$bdir.cmake.log"; exit 1; }
cmake --build "$bdir" -j "$(nproc)" --target ggml ggml-cpu ggml-base >"$bdir.build.log" 2>&1 ||
  { tail -30 "$bdir.build.log"; exit 1; }
libs=$(find "$bdir" -name 'libggml.a' -o -name 'libggml-cpu.a' -o -name 'libggml-base.a' | sort)
lib() { echo "$libs" | grep "/$1\$"; }
# shellcheck disable=SC2086
cc -O2 $march -static -o "$out" "$root/tests/bench/ggml_peer.c" -I"$src/include" \
  "$(lib libggml.a)" "$(lib libggml-cpu.a)" "$(lib libggml-base.a)" \
  -lstdc++ -lm -lpthread
strip "$out"
echo "$out"
