#!/bin/bash
# pack-ibin.sh - build the GPU machine's programs here and pack them for the device tool's carry.
#
# Usage (developer machine, repo root): scripts/pack-ibin.sh [BUILD_DIR]   (default build-l)
# Configures BUILD_DIR with -Dcuda=enabled when missing, touches every .cu first (meson 1.0 gives
# nvcc no dependency file, so a changed header would not rebuild CUDA objects), builds the
# programs scripts/gpu-run.sh runs, strips them into build-ibin/ and packs that folder into
# build-pack/ibin.tar.xz (a few MB: the stripped binaries are ~50 MB, beyond the 64 MiB carry
# together with .gpunode). gpu-run.sh unpacks build-pack/ibin.tar.xz into build-ibin/ when that
# folder is missing, so carry [".gpudeps", "build-pack"] (+ ".gpunode" for the served steps).
# A built ggml peer (scripts/build-ggml-peer.sh) already in build-ibin/ is packed too.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build-l}
[ -f "$b/build.ninja" ] || meson setup "$b" -Dcuda=enabled -Dwerror=true > /dev/null
touch kernels/cuda/*.cu
progs="tandem tests/gpu/test_engine_gpu tests/gpu/bench_hybrid tests/gpu/test_gemm_fp8 tests/gpu/test_ops
       tests/gpu/test_mla tests/gpu/bench_gpu tests/engine/dump_logits tests/gpu/test_moe_ggml
       tests/gpu/bench_moe_ggml tests/gpu/test_engine_stream tests/gpu/test_engine_hot
       tests/gpu/test_engine_graph tests/gpu/test_engine_defer tests/gpu/test_nccl tests/gpu/bench_pin
       tests/engine/test_gpu_devices tests/kernels/test_iquants tests/kernels/test_mul_mat_tiles
       tests/kernels/test_simd_kernels"
ninja -C "$b" $progs
mkdir -p build-ibin build-pack
for p in $progs; do strip -o "build-ibin/$(basename "$p")" "$b/$p"; done
tar -cJf build-pack/ibin.tar.xz build-ibin
echo "build-pack/ibin.tar.xz: $(du -h build-pack/ibin.tar.xz | cut -f1) ($(git rev-parse --short HEAD))"
