#!/bin/sh
# make-iquant-vectors.sh GGML_SRC_DIR OUT.gguf
# Builds ggml's CPU library from the ggml source tree GGML_SRC_DIR (a checkout of
# github.com/ggml-org/ggml; this script fetches nothing) with no SIMD flags, so its dot products
# are the portable *_generic ones, then compiles make-iquant-vectors.c against it and writes the
# i-quant reference vectors to OUT.gguf (tests/data/ggml-iquants-512x64.gguf).
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 GGML_SRC_DIR OUT.gguf" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
bld=${TMPDIR:-/tmp}/ggml-iquant-build
cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF \
    -DGGML_OPENMP=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$bld" --target ggml-cpu ggml-base -j "$(nproc)" >/dev/null
cc -O2 -std=c11 -I"$src/include" "$here/make-iquant-vectors.c" \
    "$bld/src/libggml-cpu.a" "$bld/src/libggml-base.a" -lstdc++ -lm -lpthread \
    -o "$bld/make-iquant-vectors"
"$bld/make-iquant-vectors" "$out"
echo "wrote $out (ggml $(git -C "$src" rev-parse HEAD 2>/dev/null || echo 'commit unknown'))"
