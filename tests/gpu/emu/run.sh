#!/bin/bash
# run.sh - build and run tests/gpu/test_moe_ggml.c against the host emulation (emu_moe_ggml.cpp).
# Usage: tests/gpu/emu/run.sh [--asan]   (needs build/ from scripts/setup.sh; honours
# TANDEM_TEST_SEED and TANDEM_TEST_QUICK). Work files go to ${TMPDIR:-/tmp}/tandem-moe-emu.
set -euo pipefail
cd "$(dirname "$0")/../../.."
w=${TMPDIR:-/tmp}/tandem-moe-emu
mkdir -p "$w"
san=; [ "${1:-}" = --asan ] && san=-fsanitize=address
cu=kernels/cuda/dequant_ggml.cu
line() { grep -n "$2" "$1" | head -1 | cut -d: -f1; }
a=$(line $cu '^#define DQ_THREADS'); b=$(line $cu '^template <int T> struct dq_geo;')
c=$(line $cu '^/\* Stage bytes'); d=$(line $cu '^template <int T, int F32OUT>')
sed -n "${a},$((b - 1))p" $cu > "$w/defs.inc"
sed -n "${b},$((c - 1))p" $cu > "$w/decoders.inc"
sed -n "${c},$((d - 1))p" $cu > "$w/stage.inc"
m=kernels/cuda/moe_ggml.cu
sed -n "$(line $m '^struct mg_layout {'),$(( $(line $m '^/\* ---- grouping kernels') - 1 ))p" $m > "$w/layout.inc"
inc="-I. -I/usr/local/cuda/include -I$w"
g++ -std=c++17 -O2 -g -ffp-contract=off $san $inc -c tests/gpu/emu/emu_moe_ggml.cpp -o "$w/emu.o"
gcc -std=c11 -O2 -g -D_GNU_SOURCE -ffp-contract=off -Wall -Wextra $san $inc -c tests/gpu/test_moe_ggml.c -o "$w/test.o"
g++ $san "$w/test.o" "$w/emu.o" build/libtandem_core.a build/kernels/cpu/libcpuq_avx2.a \
    build/kernels/cpu/libcpuq_avx512.a build/kernels/cpu/libcpuq_amx.a -lm -lpthread -o "$w/test_moe_ggml_emu"
exec "$w/test_moe_ggml_emu"
