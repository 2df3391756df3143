#!/bin/bash
# gpu-run.sh - build, test and benchmark the CUDA kernels on the GPU machine in one call.
#
# Usage (from the repo root, on the GPU machine through the device `run` tool, with
# carry: [".gpudeps"] made here once by ../shared/gpu/fetch-debs.sh .gpudeps):
#   source .gpudeps/env.sh && scripts/gpu-run.sh [tests] [bench] [sanitize] [engine] [--quick]
# (no step named: tests and bench). Builds only the GPU targets in build-gpu (meson
# -Dcuda=enabled), so work in progress elsewhere in the tree cannot stop it; runs each tests/gpu
# program directly (what `meson test --suite gpu` runs), optionally again under
# compute-sanitizer memcheck, then tests/gpu/bench_gpu. Writes to $OUT (or ./gpu-out):
# tests.log, sanitize.log, bench.log (with the device line), bench-full.txt, build.log on failure.
# A short summary is printed last.
# engine: the hybrid forward: tests/gpu/test_engine_gpu (GPU vs CPU engine) and
# tests/gpu/bench_hybrid on v3-slices with zero weights but a random embedding, norms and router
# (`convert synth --zero-but-routing`: timing only, tokens spread over the experts as in a real
# model, so expert weights stream from DRAM rather than from the 300 MB L3);
# uses binaries built on the developer machine and carried in build-ibin/ when they load here,
# else builds them in build-gpu. Writes engine.log.
# moe: tests/gpu/test_moe_ggml (+ memcheck) and tests/gpu/bench_moe_ggml; moe.log.
# stream: routed experts streamed to the GPU during prefill (gpu.prefill_experts):
# tests/gpu/test_engine_stream (streamed forwards against the CPU engine), then bench_hybrid
# prefills of 512..8192 tokens on v3-slices (1 dense + 0 / 3 MoE layers, 256 Q4_K experts,
# --zero-but-routing) in four modes: off (CPU experts), all (every expert streamed), split (experts
# above the mean token count streamed, the rest on the CPU), auto (rate-based split); per MoE
# layer = (best forward with 3 MoE layers - with 0) / 3, beside the H2D GB/s measured in the same
# run and the PCIe bound (expert bytes copied / that rate). stream.log (a run that fails or
# times out adds the tail of its full output, kept in /tmp/bh-stream-*.log, and the first such
# output goes to stream-fail.log). STREAM_PROMPTS and STREAM_MODES narrow the sweep;
# STREAM_SOURCE=alloc sets gpu.stream_source (default register). The stream
# step runs the pin probe first (next line). ATTN_MB=N (here, and in eval, layered and fulldepth)
# sets gpu.prefill_attention_mb (prompt runs attend through the GEMM op; default 0: the kernel).
# pin: tests/gpu/bench_pin (1 GiB each: cudaMallocHost, anonymous memory, a written and a sparse
# file mapping, and streaming's anonymous copy of the sparse mapping; each probe killed after 40
# s), beside the kernel, THP setting and the memory zones (a long-term pin must move pages out of
# ZONE_MOVABLE); pin.log.
# hot: hot experts (gpu.hot_experts): tests/gpu/test_engine_hot, then a v3-slice served with and
# without hot experts: decode tokens/s, hot share of the routes, routing histogram (see the step).
# graph: CUDA graphs of decode steps (gpu.cuda_graphs): tests/gpu/test_engine_graph, then
# bench_hybrid on the engine step's v3-slices with and without graphs (see the step).
# defer: expert deferral (engine.defer_experts): tests/gpu/test_engine_defer, then bench_hybrid at
# batch 1 on a v3-slice (1 dense + 3 MoE) with 0, 1 and 2 deferred experts, twice (see the step).
# nccl: the NCCL communicator of gpu.devices (docs/gpu.md, Several GPUs): whether meson found
# NCCL, tests/gpu/test_nccl over every device present (one rank on one GPU) and
# tests/engine/test_gpu_devices; builds only those two in build-gpu; nccl.log. `nccl` alone skips
# the other steps' build.
set -uo pipefail
cd "$(dirname "$0")/.."
steps=() quick=
for a in "$@"; do
  case $a in --quick) quick=--quick ;; tests|bench|sanitize|engine|prof|hf|hfdefault|eval|train|serve|moe|stream|pin|layered|fulldepth|gguf|hot|graph|defer|cpuk|nccl) steps+=("$a") ;;
    *) echo "usage: $0 [tests] [bench] [sanitize] [engine] [prof] [hf] [hfdefault] [eval] [train] [serve] [moe] [stream] [pin] [layered] [fulldepth] [gguf] [hot] [graph] [defer] [cpuk] [nccl] [--quick]"; exit 2 ;; esac
done
[ ${#steps[@]} -eq 0 ] && steps=(tests bench)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
# result STEP NAME RC START [LOG]: a summary line for one test program: PASS, SKIP (77) or
# FAIL(rc), seconds since START, and the last seed LOG printed
result() {
  local r
  case $3 in 0) r=PASS ;; 77) r=SKIP ;; *) r="FAIL($3)" ;; esac
  printf '%-9s %-18s %-8s %4ss  %s' "$1" "$2" "$r" $(( $(date +%s) - $4 )) \
    "$([ -n "${5:-}" ] && grep TANDEM_TEST_SEED "$5" 2> /dev/null | tail -1)"
}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
[ -f .gpudeps/env.sh ] && [ -z "${PKG_CONFIG_SYSROOT_DIR:-}" ] && source .gpudeps/env.sh
# binaries packed by scripts/pack-ibin.sh (build-ibin/ itself is too large to carry with .gpunode)
[ -d build-ibin ] || [ ! -f build-pack/ibin.tar.xz ] || tar -xJf build-pack/ibin.tar.xz
export PATH=/usr/local/cuda/bin:$PATH

device=$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
         --format=csv,noheader 2>&1 | head -1)
echo "device: $device; $(nvcc --version | tail -1)"

# moe: routed experts on the GPU from raw GGML blocks (kernels/cuda/moe_ggml.h):
# tests/gpu/test_moe_ggml (bit-exact dequantization of every type, the op against
# cpuq_moe_forward), the same under compute-sanitizer memcheck (TANDEM_TEST_QUICK: without the two
# DeepSeek-V3-width cases), then tests/gpu/bench_moe_ggml (pinned PCIe GB/s and the op's
# throughput per type at 512/2K/8K tokens). Builds only its two programs in build-gpu (or uses
# them from a carried build-ibin). Writes moe.log; `moe` alone skips the other steps' build.
if has moe; then
  log="$out/moe.log"
  : > "$log"
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
  mb=build-ibin
  if [ ! -x $mb/test_moe_ggml ] || [ ! -x $mb/bench_moe_ggml ] || ldd $mb/test_moe_ggml | grep -q 'not found'; then
    mb=build-gpu/tests/gpu
    s=$(date +%s)
    { [ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled -Dui=false -Dwerror=true; } > "$out/moe-build.log" 2>&1
    if ninja -C build-gpu tests/gpu/test_moe_ggml tests/gpu/bench_moe_ggml >> "$out/moe-build.log" 2>&1; then
      rm -f "$out/moe-build.log"
    else
      grep -E 'error|FAILED' "$out/moe-build.log" | head -30; echo "moe: build failed"
    fi
    echo "moe build: $(( $(date +%s) - s )) s" | tee -a "$log"
  fi
  moe_sum=()
  for mode in test sanitize; do
    s=$(date +%s)
    echo "==== test_moe_ggml ($mode)" >> "$log"
    if [ $mode = sanitize ]; then
      TANDEM_TEST_QUICK=1 timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 \
          $mb/test_moe_ggml >> "$log" 2>&1
    else
      timeout 300 $mb/test_moe_ggml >> "$log" 2>&1
    fi
    rc=$?
    moe_sum+=("$(result "moe-$mode" test_moe_ggml $rc $s "$log")")
    [ $rc -eq 0 ] || { echo "---- test_moe_ggml ($mode) failed:"; tail -25 "$log"; }
  done
  echo "==== bench_moe_ggml" >> "$log"
  s=$(date +%s)
  { echo "device: $device"; timeout 400 $mb/bench_moe_ggml $quick; } >> "$log" 2>&1
  moe_sum+=("$(printf '%-9s %-14s rc=%s %4ss' moe-bench bench_moe_ggml $? $(( $(date +%s) - s )))")
  echo; echo "==== test_moe_ggml: worst error/tolerance per check (full log: moe.log)"
  sed -n '/==== test_moe_ggml (test)/,/==== test_moe_ggml (sanitize)/p' "$log" |
      grep -E 'worst|exact|MISMATCH|relative L2|errors:|PASS|FAIL' | sed 's/  */ /g' | cut -c1-150
  echo; echo "==== compute-sanitizer memcheck (test_moe_ggml, quick)"
  sed -n '/==== test_moe_ggml (sanitize)/,/==== bench_moe_ggml/p' "$log" |
      grep -E 'ERROR SUMMARY|Invalid|error' | sort | uniq -c | head -20
  echo; sed -n '/==== bench_moe_ggml/,$p' "$log"
  echo; printf '%s\n' "${moe_sum[@]}"
  [ "${steps[*]}" = moe ] && exit 0
fi

# cpuk: CPU expert kernels (issue 18) on this host's Xeon: tests/kernels/test_mul_mat_tiles and
# test_simd_kernels (every ISA table, AMX included, against the scalar reference), then
# `tandem bench cpu` for the five MoE types and ggml's CPU matmul on the same shapes
# (build-ibin/ggml_peer from scripts/build-ggml-peer.sh: plain, then with weights in ggml's AMX
# buffer type). Binaries carried in build-ibin/ when they load here, else built in build-gpu.
# Writes cpuk.log; `cpuk` alone skips the other steps' build.
if has cpuk; then
  log="$out/cpuk.log"
  : > "$log"
  cb=build-ibin
  for p in tandem test_mul_mat_tiles test_simd_kernels; do
    if [ ! -x $cb/$p ] || ldd $cb/$p 2>/dev/null | grep -q 'not found'; then cb=; break; fi
  done
  if [ -z "$cb" ]; then
    s=$(date +%s)
    { [ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled -Dui=false -Dwerror=true; } > "$out/cpuk-build.log" 2>&1
    ninja -C build-gpu tandem tests/kernels/test_mul_mat_tiles tests/kernels/test_simd_kernels \
        >> "$out/cpuk-build.log" 2>&1 || { grep -E 'error|FAILED' "$out/cpuk-build.log" | head -30; echo "cpuk: build failed"; exit 1; }
    mkdir -p build-gpu/bin
    for p in tandem test_mul_mat_tiles test_simd_kernels; do
      ln -sf "$(find "$PWD/build-gpu" -name $p -type f -perm -u+x | head -1)" build-gpu/bin/$p
    done
    cb=build-gpu/bin
    echo "cpuk build: $(( $(date +%s) - s )) s" | tee -a "$log"
  fi
  cpuk_sum=()
  for t in test_mul_mat_tiles test_simd_kernels; do
    s=$(date +%s)
    echo "==== $t" >> "$log"
    timeout 300 $cb/$t >> "$log" 2>&1
    rc=$?
    cpuk_sum+=("$(result cpuk $t $rc $s "$log")")
    [ $rc -eq 0 ] || { echo "---- $t failed:"; tail -25 "$log"; }
  done
  echo "==== tandem bench cpu (commit $(git rev-parse --short HEAD 2>/dev/null))" >> "$log"
  lscpu | grep -E 'Model name|^CPU\(s\)|NUMA node\(s\)|L2|L3' >> "$log"
  timeout 400 $cb/tandem bench cpu --quick --types q4_K,q5_K,q6_K,q8_0,iq4_xs --prefill 512,2048 \
      >> "$log" 2>&1
  cpuk_sum+=("$(printf '%-9s %-18s rc=%s' cpuk "bench cpu" $?)")
  # the VNNI batched-decode kernels alone (the amx table uses them below AMX_MIN_TOK tokens):
  # their shared-token ratios beside the AMX ones above tell where AMX should start
  echo "==== tandem bench cpu --isa avx512 (decode, shared, spread)" >> "$log"
  timeout 300 $cb/tandem bench cpu --quick --isa avx512 --types q4_K,q5_K,q6_K,iq4_xs --prefill 0 \
      >> "$log" 2>&1
  cpuk_sum+=("$(printf '%-9s %-18s rc=%s' cpuk "bench cpu avx512" $?)")
  if [ -x build-ibin/ggml_peer ]; then
    # the CPU's SIMD/AMX flags as the (virtual) machine reports them: ggml_peer is built for
    # -march=sapphirerapids, and its AMX path has died with SIGILL here (it prints the bytes)
    echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512|amx|avx_vnni)' | tr '\n' ' ')" >> "$log"
    for x in "" AMX; do
      echo "==== ggml_peer ${x:+--extra $x}" >> "$log"
      timeout 300 build-ibin/ggml_peer --threads 16 --types q4_K,q5_K,q6_K,q8_0,iq4_xs \
          --prefill 512,2048 --size-gb 1 ${x:+--extra $x} >> "$log" 2>&1
      cpuk_sum+=("$(printf '%-9s %-18s rc=%s' cpuk "ggml_peer ${x:-plain}" $?)")
      grep -a 'SIGILL' "$log" | tail -1
    done
  else
    echo "build-ibin/ggml_peer missing (scripts/build-ggml-peer.sh GGML_SRC spr)" | tee -a "$log"
  fi
  sed -n '/==== tandem bench cpu/,$p' "$log" | grep -vE '^<[0-9]>'
  echo; printf '%s\n' "${cpuk_sum[@]}"
  [ "${steps[*]}" = cpuk ] && exit 0
fi
if has nccl; then
  log="$out/nccl.log"
  : > "$log"
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
  { [ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled -Dui=false -Dwerror=true; } > "$out/nccl-build.log" 2>&1
  grep -h -E 'nccl.h not found|Has header "nccl.h"' build-gpu/meson-logs/meson-log.txt |
      tail -3 | tee -a "$log"
  nsum=()
  if ninja -C build-gpu tests/gpu/test_nccl tests/engine/test_gpu_devices >> "$out/nccl-build.log" 2>&1; then
    rm -f "$out/nccl-build.log"
    for t in tests/gpu/test_nccl tests/engine/test_gpu_devices; do
      s=$(date +%s)
      echo "==== $t" >> "$log"
      timeout 200 build-gpu/$t >> "$log" 2>&1
      rc=$?
      nsum+=("$(result nccl "${t##*/}" $rc $s "$log")")
      [ $rc -eq 0 ] || { echo "---- $t failed:"; tail -15 "$log"; }
    done
    grep -E 'ok|SKIP' "$log"
  else
    grep -E 'error|FAILED' "$out/nccl-build.log" | head -30; echo "nccl: build failed"
  fi
  printf '%s\n' "${nsum[@]}"
  [ "${steps[*]}" = nccl ] && exit 0
fi

t0=$(date +%s)
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
# Binaries: those built on the developer machine and carried in build-ibin/ when they all load
# here (saves the device the build), else build-gpu/ built now.
progs="tandem test_gemm_fp8 test_ops test_mla bench_gpu test_engine_gpu bench_hybrid dump_logits"
has stream && progs="$progs test_engine_stream bench_pin"
has pin && progs="$progs bench_pin"
has hot && progs="$progs test_engine_hot"
has graph && progs="$progs test_engine_graph"
has defer && progs="$progs test_engine_defer"
ebin=build-ibin
for p in $progs; do
  if [ ! -x $ebin/$p ] || ldd $ebin/$p | grep -q 'not found'; then ebin=build-gpu; break; fi
done
if [ $ebin = build-ibin ]; then
  echo "binaries: carried in build-ibin"
else
  [ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled -Dui=false -Dwerror=true > "$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log"; echo "meson setup failed"; exit 1; }
  if ninja -C build-gpu tandem tests/gpu/test_gemm_fp8 tests/gpu/test_ops tests/gpu/test_mla \
       tests/gpu/bench_gpu tests/gpu/test_engine_gpu tests/gpu/bench_hybrid tests/engine/dump_logits \
       $(has stream && echo tests/gpu/test_engine_stream) $( (has stream || has pin) && echo tests/gpu/bench_pin) $(has hot && echo tests/gpu/test_engine_hot) \
       $(has graph && echo tests/gpu/test_engine_graph) \
       $(has defer && echo tests/gpu/test_engine_defer) \
       >> "$out/build.log" 2>&1; then
    rm -f "$out/build.log"
  else
    grep -E 'error|FAILED' "$out/build.log" | head -30; echo "build failed"; exit 1
  fi
  mkdir -p build-gpu/bin
  for p in $progs; do ln -sf "$(find "$PWD/build-gpu" -name $p -type f -perm -u+x | head -1)" build-gpu/bin/$p; done
  ebin=build-gpu/bin
fi
echo "build: $(( $(date +%s) - t0 )) s"
tb=$PWD/$ebin/tandem

summary=()
run_tests() {   # $1 = tests | sanitize
  local log="$out/$1.log" t s rc r
  : > "$log"
  for t in test_gemm_fp8 test_ops test_mla; do
    s=$(date +%s)
    echo "==== $t" >> "$log"
    if [ "$1" = sanitize ]; then
      timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $ebin/$t >> "$log" 2>&1
    else
      TANDEM_SHARED=$PWD/../shared $ebin/$t >> "$log" 2>&1
    fi
    rc=$?
    summary+=("$(result "$1" "$t" $rc $s "$log")")
    [ $rc -eq 0 ] || { echo "---- $t ($1) failed:"; tail -15 "$log"; }
  done
}
has tests && run_tests tests
if has bench; then
  { echo "device: $device"; $ebin/bench_gpu --out "$out/bench-full.txt" $quick; } \
    > "$out/bench.log" 2>&1
  summary+=("$(printf '%-9s %-14s rc=%s' bench bench_gpu $?)")
fi
has sanitize && run_tests sanitize
if has engine; then
  log="$out/engine.log"
  s=$(date +%s)
  TANDEM_SRC=$PWD TANDEM_BIN=$tb timeout 200 $ebin/test_engine_gpu > "$log" 2>&1
  rc=$?
  summary+=("$(result engine test_engine_gpu $rc $s "$log")")
  grep -E '^[a-z/0-9]+:|prompts|prefill|greedy|targets|FAIL|PASS' "$log" | grep -v 'tandem\['
  # Decode step cost per MoE layer, from two such v3-slices that differ only in their number of
  # MoE layers (1 dense + 0 MoE, 1 dense + 3 MoE): per_moe = (step3 - step0) / 3 (CPU experts plus
  # the GPU work on the critical path between two expert calls); fixed = step0 (embedding, the
  # dense layer, final norm, lm_head, logits download); projection to DeepSeek-V3 = fixed +
  # 58 x per_moe (its 2 further dense layers, ~0.2 ms of GPU work each, are left out).
  for nm in 0 3; do
    [ -d /tmp/tandem-v3z$nm ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers $nm \
        --experts-n 256 --experts q4_K --zero-but-routing --out /tmp/tandem-v3z$nm > /dev/null 2>&1 ||
        echo "synth v3-slice failed"
  done
  for bs in 1 8; do
    for nm in 0 3; do
      echo "==== bench_hybrid v3-slice 1 dense + $nm MoE, batch $bs" | tee -a "$log"
      timeout 60 $ebin/bench_hybrid --model /tmp/tandem-v3z$nm --batch $bs --steps 32 --prompt 256 \
          2>&1 | grep -v 'tandem\[' | tee -a "$log" > /tmp/bh-$nm-$bs.txt
    done
    awk -v bs=$bs '/mean .* ms\/step/ { for (i = 1; i <= NF; i++) if ($i == "mean") s[FILENAME] = $(i + 1) }
         /CPU experts/ { for (i = 1; i <= NF; i++) if ($i == "experts") e[FILENAME] = $(i + 1) }
         END { s0 = s["/tmp/bh-0-" bs ".txt"]; s3 = s["/tmp/bh-3-" bs ".txt"]; per = (s3 - s0) / 3;
               ex = e["/tmp/bh-3-" bs ".txt"]; t61 = s0 + 58 * per;
               printf "batch %d: per MoE layer %.3f ms = CPU experts %.3f + GPU critical path %.3f: ratio %.2f (target <= 1.1); fixed per step %.3f ms; 61-layer projection %.1f ms/step = %.2f tokens/s\n", bs, per, ex, per - ex, per / ex, s0, t61, bs * 1000 / t61 }' \
        /tmp/bh-0-$bs.txt /tmp/bh-3-$bs.txt | tee -a "$log"
  done
  echo "==== bench_hybrid v3-slice 1 dense + 3 MoE, prefill" | tee -a "$log"
  for p in 1024 4096; do
    timeout 60 $ebin/bench_hybrid --model /tmp/tandem-v3z3 --batch 1 --steps 2 --prompt $p 2>&1 |
        grep prefill | tee -a "$log"
  done
fi

if has pin || has stream; then
  log="$out/pin.log"
  { echo "kernel $(uname -r); THP $(cat /sys/kernel/mm/transparent_hugepage/enabled 2> /dev/null);" \
         "/tmp on $(df -T /tmp | awk 'NR == 2 { print $2 }')"
    awk '/^Node/ { z = $4 } /managed/ { printf "zone %s: %.1f GiB managed\n", z, $2 * 4096 / 2^30 }' /proc/zoneinfo
    timeout 300 $ebin/bench_pin --mib 1024 --timeout 40; } > "$log" 2>&1
  cat "$log"
fi

if has stream; then
  log="$out/stream.log"
  : > "$log"
  s=$(date +%s)
  TANDEM_SRC=$PWD TANDEM_BIN=$tb timeout 300 $ebin/test_engine_stream >> "$log" 2>&1
  rc=$?
  summary+=("$(result stream test_engine_stream $rc $s "$log")")
  grep -E 'streamed|logits vs|FAIL|PASS' "$log"
  for nm in 0 3; do
    [ -d /tmp/tandem-v3z$nm ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers $nm \
        --experts-n 256 --experts q4_K --zero-but-routing --out /tmp/tandem-v3z$nm > /dev/null 2>&1 ||
        echo "synth v3-slice failed" | tee -a "$log"
  done
  # what decides how long pinning the (sparse, file-backed) expert weights takes
  { echo "host: kernel $(uname -r); $(df -T /tmp | awk 'NR == 2 { print "/tmp on " $2 }');" \
         "$(free -g | awk '/^Mem:/ { print "RAM " $2 " GiB, " $7 " available" }');" \
         "v3z3 files $(du -sh --apparent-size /tmp/tandem-v3z3 2> /dev/null | cut -f1) apparent," \
         "$(du -sh /tmp/tandem-v3z3 2> /dev/null | cut -f1) on disk"; } | tee -a "$log"
  # Each run's whole output (stdout line-buffered, the tandem[...] log lines with the expert
  # registration times, per-forward progress on stderr) goes to its own file under /tmp first,
  # so a run killed by timeout still shows how far it got; stream.log gets the lines without the
  # log prefix, and, for a run that fails or times out, the tail of its file (also printed).
  # $out/stream-fail.log keeps the first failed run's whole file.
  for p in ${STREAM_PROMPTS:-512 1024 2048 4096 8192}; do
    for mode in ${STREAM_MODES:-off all split auto}; do
      for nm in 0 3; do
        echo "==== bench_hybrid v3-slice 1 dense + $nm MoE, prefill $p tokens, stream $mode" >> "$log"
        rl=/tmp/bh-stream-$p-$mode-$nm.log
        s=$(date +%s)
        timeout -k 10 300 stdbuf -oL -eL $ebin/bench_hybrid --model /tmp/tandem-v3z$nm --batch 2 \
            --steps 1 --prompt $p --stream $mode --source ${STREAM_SOURCE:-register} --attn-mb ${ATTN_MB:-0} > "$rl" 2>&1
        rc=$?
        grep -v 'tandem\[' "$rl" | tee -a "$log" > /tmp/bs-$nm.txt
        if [ $rc -ne 0 ]; then
          { echo "---- bench_hybrid $p $mode $nm MoE: rc=$rc after $(( $(date +%s) - s )) s" \
                 "(124/137: timeout); last lines of $rl:"; tail -25 "$rl"; } | tee -a "$log"
          [ -f "$out/stream-fail.log" ] || cp "$rl" "$out/stream-fail.log"
        fi
      done
      awk -v p=$p -v mode=$mode '
        /best .* ms per forward/ { for (i = 1; i <= NF; i++) if ($i == "best") b[FILENAME] = $(i + 1) }
        /^stream:/ && FILENAME ~ /bs-3/ { for (i = 1; i <= NF; i++) {
            if ($i == "H2D") g = $(i + 1); if ($i == "bound") pb = $(i + 1); if ($i == "copied;") mb = $(i - 2) } }
        END { b0 = b["/tmp/bs-0.txt"]; b3 = b["/tmp/bs-3.txt"];
              if (b0 == "" || b3 == "") { printf "prompt %5d %-5s: failed\n", p, mode; exit }
              per = (b3 - b0) / 3; t61 = b0 + 58 * per;
              printf "prompt %5d %-5s: per MoE layer %8.2f ms; 61-layer projection %7.0f tokens/s", p, mode, per, p * 1000 / t61;
              if (g != "") printf "; %s MB/layer copied at %s GB/s (H2D measured), PCIe bound %s ms/layer", mb, g, pb;
              printf "\n" }' /tmp/bs-0.txt /tmp/bs-3.txt | tee -a "$log"
    done
  done
fi

# hfdefault: the same HF comparison on the trained models/default, over 256 tokens of held-out
# style chats (train/data.py, seed 7, rendered with the DeepSeek-V3 special tokens): CPU and GPU
# backends, and CPU --w8a16.
if has hfdefault; then
  log="$out/hfdefault.log"
  d=/tmp/hf-default
  rm -rf $d $d-hf && mkdir -p $d
  python3 - > $d/chat.txt <<'PY'
import random, sys
sys.path.insert(0, "train")
import data
rng, out = random.Random(7), []
for _ in range(12):
    msgs, _, _ = data.conversation(rng)
    s = "<｜begin▁of▁sentence｜>"
    for m in msgs:
        s += ("<｜User｜>" + m["content"]) if m["role"] == "user" else \
             ("<｜Assistant｜>" + m["content"] + "<｜end▁of▁sentence｜>")
    out.append(s)
sys.stdout.write("".join(out))
PY
  $tb tokenize --model models/default --special < $d/chat.txt 2> /dev/null |
      python3 -c "import json,sys; print(' '.join(map(str, json.load(sys.stdin)[:256])))" > $d/ids.txt
  $tb convert dequant --model models/default --out $d-hf >> "$log" 2>&1
  cp models/default/tokenizer*.json $d-hf/ 2> /dev/null
  $ebin/dump_logits --model models/default --ids $d/ids.txt --out $d/cpu.f32 >> "$log" 2>&1
  $ebin/dump_logits --model models/default --ids $d/ids.txt --out $d/gpu.f32 --placement hybrid >> "$log" 2>&1
  $ebin/dump_logits --model models/default --ids $d/ids.txt --out $d/cpu-w8a16.f32 --w8a16 >> "$log" 2>&1
  # the f32 latent cache on the GPU backend (attention then runs on the CPU), and tandem on the
  # dequantized copy HF loads with the f32 cache
  $ebin/dump_logits --model models/default --ids $d/ids.txt --out $d/gpu-kvf32.f32 --placement hybrid \
      --kv f32 >> "$log" 2>&1
  $ebin/dump_logits --model $d-hf --ids $d/ids.txt --out $d/dq-kvf32.f32 --kv f32 >> "$log" 2>&1
  echo "==== models/default: hf_compare (cpu, gpu, cpu W8A16, gpu f32 cache, dequantized + f32" \
       "cache), $(wc -w < $d/ids.txt) chat tokens" | tee -a "$log"
  timeout 300 python3 tests/reference/hf_compare.py --model $d-hf --ids $d/ids.txt \
      --tandem-logits $d/cpu.f32 $d/gpu.f32 $d/cpu-w8a16.f32 $d/gpu-kvf32.f32 $d/dq-kvf32.f32 \
      --require $d/dq-kvf32.f32 2>&1 |
      grep -v -i "warning\|Loading" | tee -a "$log"
fi

# prof: where the main stream's time goes in a decode step (bench_hybrid --profile 1: an event
# before every op), v3-slice 1 dense + 3 MoE layers (--zero-but-routing), batch 1 and 8.
if has prof; then
  log="$out/prof.log"
  [ -d /tmp/tandem-v3z3 ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 3 \
      --experts-n 256 --experts q4_K --zero-but-routing --out /tmp/tandem-v3z3 > /dev/null 2>&1
  for bs in 1 8; do
    echo "==== bench_hybrid --profile 1, batch $bs" | tee -a "$log"
    timeout 60 $ebin/bench_hybrid --model /tmp/tandem-v3z3 --batch $bs --steps 32 --prompt 256 \
        --profile 1 2>&1 | grep -v 'tandem\[' | tee -a "$log"
  done
  # the expert pool's idle spin (cpu.spin_us, default 50): workers that sleep between two
  # expert calls (the GPU's ~0.4 ms of attention) must be woken for the next
  for tsp in "16 50" "16 2000" "15 50" "15 2000" "14 2000"; do
    set -- $tsp
    echo "==== bench_hybrid batch 1, cpu.threads $1, cpu.spin_us $2" | tee -a "$log"
    timeout 60 $ebin/bench_hybrid --model /tmp/tandem-v3z3 --batch 1 --steps 32 --prompt 256 \
        --threads $1 --spin-us $2 2>&1 | grep -E 'decode:|CPU experts' | tee -a "$log"
  done
fi

# hf: tandem's logits on the CPU and on the GPU backend against HF transformers' DeepseekV3 in
# fp32 on the dequantized weights (tests/reference/hf_compare.py), for `tiny` and a v3-slice
# with DeepSeek-V3's true dimensions (1 dense + 2 MoE layers, 16 Q4_K experts), 256 positions;
# also tandem (CPU) on the dequantized F32 copy HF loads, with an f32 and a bf16 latent cache.
if has hf; then
  log="$out/hf.log"
  : > "$log"
  for m in tiny v3-slice; do
    d=/tmp/hf-$m
    rm -rf $d $d-hf
    if [ $m = tiny ]; then
      $tb convert synth --preset tiny --seed 11 --out $d >> "$log" 2>&1
    else
      $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 2 --experts-n 16 \
          --experts q4_K --seed 11 --out $d >> "$log" 2>&1
    fi
    $tb convert dequant --model $d --out $d-hf >> "$log" 2>&1 || echo "$m: dequant failed" | tee -a "$log"
    $ebin/dump_logits --model $d --make-ids 256 --seed 1 --ids $d/ids.txt --out $d/cpu.f32 --routes $d/cpu.routes \
        >> "$log" 2>&1 || echo "$m: dump_logits cpu failed" | tee -a "$log"
    $ebin/dump_logits --model $d --ids $d/ids.txt --out $d/gpu.f32 --routes $d/gpu.routes --placement hybrid \
        >> "$log" 2>&1 || echo "$m: dump_logits hybrid failed" | tee -a "$log"
    $ebin/dump_logits --model $d --ids $d/ids.txt --out $d/gpu-cublaslt.f32 --routes $d/gpu-cublaslt.routes --placement hybrid \
        --fp8-gemm cublaslt >> "$log" 2>&1 || echo "$m: dump_logits cublaslt failed" | tee -a "$log"
    $ebin/dump_logits --model $d --ids $d/ids.txt --out $d/cpu-w8a16.f32 --routes $d/cpu-w8a16.routes --w8a16 \
        >> "$log" 2>&1 || echo "$m: dump_logits w8a16 failed" | tee -a "$log"
    $ebin/dump_logits --model $d --ids $d/ids.txt --out $d/cpu-w8a16-kvf32.f32 --routes $d/cpu-w8a16-kvf32.routes --w8a16 --kv f32 \
        >> "$log" 2>&1 || echo "$m: dump_logits w8a16 kv f32 failed" | tee -a "$log"
    # the f32 latent cache on the GPU backend (attention then runs on the CPU backend)
    $ebin/dump_logits --model $d --ids $d/ids.txt --out $d/gpu-kvf32.f32 --routes $d/gpu-kvf32.routes \
        --placement hybrid --kv f32 >> "$log" 2>&1 || echo "$m: dump_logits hybrid kv f32 failed" | tee -a "$log"
    # tandem on the very weights HF gets (the F32 copy: every linear W32A32, F32 experts), with
    # the f32 latent cache (engine.kv_cache_type = f32) and with the contract's bf16 cache
    $ebin/dump_logits --model $d-hf --ids $d/ids.txt --out $d/dq-kvf32.f32 --routes $d/dq-kvf32.routes --kv f32 \
        >> "$log" 2>&1 || echo "$m: dump_logits dequantized kv f32 failed" | tee -a "$log"
    $ebin/dump_logits --model $d-hf --ids $d/ids.txt --out $d/dq-kvbf16.f32 --routes $d/dq-kvbf16.routes \
        >> "$log" 2>&1 || echo "$m: dump_logits dequantized failed" | tee -a "$log"
    # the same, decoded one token per forward over the cache (--chunk 1: the absorbed decode path)
    $ebin/dump_logits --model $d-hf --ids $d/ids.txt --out $d/dq-kvf32-decode.f32 --kv f32 --chunk 1 \
        >> "$log" 2>&1 || echo "$m: dump_logits dequantized decode failed" | tee -a "$log"
    echo "==== $m: hf_compare (cpu, gpu, gpu with cuBLASLt prefill, cpu W8A16, cpu W8A16 + f32" \
         "cache, dequantized + f32 cache, dequantized, gpu f32 cache, dequantized decode)" | tee -a "$log"
    s=$(date +%s)
    timeout 400 python3 tests/reference/hf_compare.py --model $d-hf --ids $d/ids.txt \
        --tandem-logits $d/cpu.f32 $d/gpu.f32 $d/gpu-cublaslt.f32 $d/cpu-w8a16.f32 \
        $d/cpu-w8a16-kvf32.f32 $d/dq-kvf32.f32 $d/dq-kvbf16.f32 $d/gpu-kvf32.f32 \
        $d/dq-kvf32-decode.f32 --require $d/dq-kvf32.f32 $d/dq-kvf32-decode.f32 2>&1 | grep -v Warning | tee -a "$log"
    echo "$m: $(( $(date +%s) - s )) s" | tee -a "$log"
    rm -rf $d-hf
  done
fi

# serve: the daemon on the GPU path, end to end. (1) models/default's held-out accuracy through
# HTTP (train/eval_http.py, 1000 chats, seed 2) with gpu.placement=hybrid; (2) a v3-slice
# (1 dense + 3 MoE layers, 256 Q4_K experts, --zero-but-routing: routing spreads as in a real model)
# served hybrid and measured with tests/bench/serve_bench.mjs: concurrency sweep, ITL while
# 2K-token prefills arrive (engine.prefill_step_ratio 0 and 2), prefix-cache second-turn TTFT.
# node is not installed on the GPU machine: it comes in the carried .gpunode/ (node.xz and
# node_modules.tar.xz, made on the developer machine from /usr/bin/node and tests/node_modules).
if has eval || has train || has serve || has layered || has fulldepth || has gguf || has hot; then
  log="$out/serve.log"
  : > "$log"
  mkdir -p /tmp/gnode && xz -dc .gpunode/node.xz > /tmp/gnode/node && chmod +x /tmp/gnode/node
  [ -d tests/node_modules ] || tar -C tests -xJf .gpunode/node_modules.tar.xz
  NODE=/tmp/gnode/node
  port=18180
  start_srv() {   # $1 = model dir, rest = options; sets srv
    port=$((port + 1))
    $tb serve --model "$1" --server.port $port "${@:2}" > /tmp/serve-$port.log 2>&1 &
    srv=$!
    for i in $(seq 1 240); do
      curl -sf http://127.0.0.1:$port/health > /dev/null && return 0
      kill -0 $srv 2>/dev/null || break
      sleep 0.5
    done
    echo "server on $1 did not start:"; tail -5 /tmp/serve-$port.log; return 1
  }
  stop_srv() { kill $srv 2>/dev/null; wait $srv 2>/dev/null; }
  sb() { $NODE tests/bench/serve_bench.mjs --base-url http://127.0.0.1:$port/v1 "$@"; }
  metric() { curl -s http://127.0.0.1:$port/metrics | awk -v m="tandem:$1" 'index($1, m "{") == 1 { print $2 }'; }
fi
if has eval; then
  # gpu: the routed experts too (re-quantized to FP8 on the GPU); stream: hybrid with every
  # forward's routed experts streamed to the GPU (issue 17's accuracy check with streaming forced)
  # EVAL_PLACEMENTS narrows the list (default: hybrid gpu stream)
  for pl in ${EVAL_PLACEMENTS:-hybrid gpu stream}; do
    if [ $pl = stream ]; then
      start_srv models/default --gpu.placement hybrid --gpu.prefill_experts=on \
          --gpu.prefill_attention_mb=${ATTN_MB:-0} \
          --gpu.prefill_min_tokens=1 --gpu.prefill_split_tokens=1 || continue
    else
      start_srv models/default --gpu.placement $pl || continue
    fi
    echo "==== models/default through the GPU path, $pl" | tee -a "$log"
    s=$(date +%s)
    python3 train/eval_http.py --url http://127.0.0.1:$port --n 1000 --seed 2 --concurrency 16 \
        > "$out/eval-$pl.json" 2>&1
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d)[:300])" \
        "$out/eval-$pl.json" 2>&1 | tee -a "$log" || tail -5 "$out/eval-$pl.json"
    echo "eval: $(( $(date +%s) - s )) s" | tee -a "$log"
    stop_srv
  done
fi
# train: models/default trained anew on this GPU in one call (docs/model-card.md): train/train.py
# (TRAIN_SECONDS of training, 330 by default, seed 1, more options in TRAIN_ARGS such as
# "--agent-share 0.15 --batch 64"; its bf16 evaluation), `tandem convert
# quantize` to the shipped FP8 + Q4_K form in $out/default (the new model's files come back
# there), then the converted model served with gpu.placement=hybrid, once with its own template
# and once with --model.template=deepseek-r1 (reasoning): train/check_render.py (the prompts
# train.py built equal the server's, token for token, with the trained tokenizer) and
# train/eval_http.py (1000 old-style chats and EVAL_AGENT_N=500 agent examples, seed 2,
# concurrency 16) into $out/eval-train.json. train.log holds train.py's output, train_log.json
# and the render check. $out keeps 8 files: default/ (6), train.log, eval-train.json.
if has train; then
  tlog="$out/train.log"
  : > "$tlog"
  tr=/tmp/train-out
  rm -rf $tr "$out/default"
  s=$(date +%s)
  python3 train/train.py --out $tr --seconds "${TRAIN_SECONDS:-330}" --seed 1 ${TRAIN_ARGS:-} >> "$tlog" 2>&1
  rc=$?
  grep -E '^(tokenizer|data|model|trained|eval)|^  (True|False)|Error' "$tlog" | cut -c1-300
  echo "train.py: rc=$rc, $(( $(date +%s) - s )) s" | tee -a "$tlog"
  summary+=("$(printf '%-9s %-14s rc=%s %4ss' train train.py $rc $(( $(date +%s) - s )))")
  if [ $rc -eq 0 ] && $tb convert quantize --model $tr --out "$out/default" --experts q4_K >> "$tlog" 2>&1; then
    { echo "==== train_log.json"; cat $tr/train_log.json; echo; } >> "$tlog"
    if start_srv "$out/default" --gpu.placement hybrid; then
      s1=$srv p1=$port r1=()
      # the reasoning task needs the R1 template; without that server it is skipped (counted)
      start_srv "$out/default" --gpu.placement hybrid --model.template=deepseek-r1 &&
          r1=(--r1-url http://127.0.0.1:$port)
      echo "==== check_render (served prompts = training prompts)" | tee -a "$tlog"
      python3 train/check_render.py --url http://127.0.0.1:$p1 "${r1[@]}" \
          --tokenizer $tr/tokenizer.json --n 400 > /tmp/render-check.json 2>&1
      echo "check_render: rc=$?" | tee -a "$tlog"
      head -c 3000 /tmp/render-check.json >> "$tlog"
      echo "==== eval_http on $out/default, gpu.placement=hybrid" | tee -a "$tlog"
      s=$(date +%s)
      python3 train/eval_http.py --url http://127.0.0.1:$p1 "${r1[@]}" \
          --n 1000 --agent-n "${EVAL_AGENT_N:-500}" --seed 2 --concurrency 16 \
          > "$out/eval-train.json" 2>&1
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.pop('wrong'); print(json.dumps(d))" \
          "$out/eval-train.json" 2>&1 | tee -a "$tlog" || tail -5 "$out/eval-train.json"
      echo "eval: $(( $(date +%s) - s )) s" | tee -a "$tlog"
      [ ${#r1[@]} -gt 0 ] && stop_srv
      srv=$s1; stop_srv
    fi
  else
    echo "train: no model (train.py rc=$rc, or convert failed):"; tail -20 "$tlog"
  fi
  [ -s "$out/serve.log" ] || rm -f "$out/serve.log"
fi
if has serve; then
  echo "==== $(timeout 40 stdbuf -oL $tb bench cpu --quick --size-gb 4 --prefill 0 2>/dev/null | grep -m1 'DRAM read')" | tee -a "$log"
  v3=/tmp/tandem-v3r
  s=$(date +%s)
  $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 3 --experts-n 256 \
      --experts q4_K --seed 5 --zero-but-routing --out $v3 > /dev/null 2>&1 || echo "synth v3-slice failed"
  echo "synth v3-slice (random, 256 experts): $(( $(date +%s) - s )) s" | tee -a "$log"
  o="--model.template=deepseek-v3 --gpu.placement hybrid"
  if start_srv $v3 $o; then
    echo "==== v3-slice: concurrency sweep" | tee -a "$log"
    sb --input-len 128 --output-len 64 --num-prompts 16 --max-concurrency 1,4,8,16 --vocab 120000 \
       --result-file "$out/sweep.json" 2>&1 | tee -a "$log"
    echo "==== v3-slice: prefix cache on, 2K history" | tee -a "$log"
    sb --input-len 2048 --output-len 8 --num-prompts 2 --max-concurrency 1 --multi-turn \
       --turn2-len 64 --vocab 120000 --result-file "$out/prefix1.json" 2>&1 | tail -4 | tee -a "$log"
    stop_srv
  fi
  if start_srv $v3 $o --engine.prefix_cache=0; then
    echo "==== v3-slice: prefix cache off, 2K history" | tee -a "$log"
    sb --input-len 2048 --output-len 8 --num-prompts 2 --max-concurrency 1 --multi-turn \
       --turn2-len 64 --vocab 120000 --result-file "$out/prefix0.json" 2>&1 | tail -4 | tee -a "$log"
    stop_srv
  fi
  for r in 0 2; do
    start_srv $v3 $o --engine.prefill_step_ratio=$r || continue
    echo "==== v3-slice: ITL, prefill_step_ratio $r: single stream, then 8 streams + 2K prefills" | tee -a "$log"
    sb --input-len 32 --output-len 64 --num-prompts 2 --max-concurrency 1 --vocab 120000 \
       --warmup 0 --seed 3 --result-file "$out/itl1-$r.json" 2>&1 | tail -3 | tee -a "$log"
    sb --input-len 2048 --output-len 1 --num-prompts 3 --request-rate 0.5 --vocab 120000 \
       --warmup 0 --seed 9 > "$out/itl-prefills-$r.txt" 2>&1 &
    pf=$!
    sb --input-len 32 --output-len 256 --num-prompts 8 --max-concurrency 8 --vocab 120000 \
       --warmup 0 --result-file "$out/itl8-$r.json" 2>&1 | tail -3 | tee -a "$log"
    wait $pf
    stop_srv
  done
fi
# layered: serving while a long prompt streams (gpu.prefill_experts=on, layered prefill): ITL of 4
# decoding streams alone, then while an 8K-token prompt prefills, for three schedules: no pacing
# (the prompt in one 8192-token step), pacing without layered passes (small paced chunks, which
# never stream), pacing with layered passes (one 8192-token pass, k layers a step). v3-slice 1 dense +
# 3 MoE layers, 256 Q4_K experts. Writes layered.log and the JSON results.
if has layered; then
  log="$out/layered.log"
  : > "$log"
  v3=/tmp/tandem-v3r
  [ -d $v3 ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 3 --experts-n 256 \
      --experts q4_K --seed 5 --zero-but-routing --out $v3 > /dev/null 2>&1 || echo "synth v3-slice failed"
  o="--model.template=deepseek-v3 --gpu.placement hybrid --gpu.prefill_experts=on --engine.max_batch_tokens=8192"
  o="$o --gpu.prefill_attention_mb=${ATTN_MB:-0}"
  for cfg in "0 0" "2 0" "2 256"; do
    set -- $cfg
    start_srv $v3 $o --engine.prefill_step_ratio=$1 --engine.layered_prefill_tokens=$2 || continue
    echo "==== layered: prefill_step_ratio $1, layered_prefill_tokens $2" | tee -a "$log"
    sb --input-len 32 --output-len 128 --num-prompts 4 --max-concurrency 4 --vocab 120000 \
       --warmup 0 --seed 3 --result-file "$out/layered-alone-$1-$2.json" 2>&1 | tail -3 | tee -a "$log"
    sb --input-len 32 --output-len 512 --num-prompts 4 --max-concurrency 4 --vocab 120000 \
       --warmup 0 --seed 4 --result-file "$out/layered-busy-$1-$2.json" 2>&1 | tail -3 | tee -a "$log" &
    dc=$!
    sleep 1
    sb --input-len 8192 --output-len 1 --num-prompts 1 --max-concurrency 1 --vocab 120000 \
       --warmup 0 --seed 9 --result-file "$out/layered-8k-$1-$2.json" 2>&1 | tail -3 | tee -a "$log"
    wait $dc
    grep -E 'streamed|layered' /tmp/serve-$port.log | tail -3 >> "$log"
    stop_srv
  done
fi
# fulldepth: DeepSeek-V3's true depth and dimensions served over HTTP: 3 dense + 58 MoE layers,
# FULL_EXPERTS (16) Q4_K experts per layer (zero but routing; 58 x 16 x 24.8 MB = 23 GB of experts
# plus ~17 GB of FP8 non-expert weights fit the 64 GB disk and 125 GiB RAM), hybrid with
# gpu.prefill_experts=on and a KV cache of 32K tokens (engine.kv_blocks: the plan's 32K figure is
# what nvidia-smi then shows): load time, TTFT of 1K, 2K and 8K prompts, decode at concurrency 1,
# 4 and 8, device memory in use while serving (nvidia-smi) beside the plan's line, host RSS; the
# routing counts recorded meanwhile; then the DRAM read ceiling with the server stopped (`tandem
# bench cpu`'s first line) and the bound it gives (ceiling / expert bytes a token reads); then the
# model served again with gpu.hot_experts=FULL_HOT_MB (8000) chosen from those counts:
# single-stream decode, the share of routes on hot experts, device memory, the routing histogram.
# Writes fulldepth.log.
if has fulldepth; then
  log="$out/fulldepth.log"
  : > "$log"
  fd=/tmp/tandem-v3-61
  cf=/tmp/tandem-v3-61.counts
  s=$(date +%s)
  [ -d $fd ] || $tb convert synth --preset v3-slice --dense-layers 3 --moe-layers 58 \
      --experts-n ${FULL_EXPERTS:-16} --experts q4_K --seed 5 --zero-but-routing --out $fd \
      > /dev/null 2>&1 || echo "synth 61-layer failed" | tee -a "$log"
  echo "synth 61 layers: $(( $(date +%s) - s )) s, $(du -sh $fd | cut -f1)" | tee -a "$log"
  rm -f $cf
  o="--model.template=deepseek-v3 --gpu.placement hybrid --gpu.prefill_experts=on"
  o="$o --gpu.prefill_attention_mb=${ATTN_MB:-0} --engine.max_batch_tokens=8192"
  o="$o --engine.kv_blocks=2048 --engine.kv_block_tokens=16"   # 32K tokens
  s=$(date +%s)
  if start_srv $fd $o --gpu.hot_experts_file=$cf; then
    echo "load to ready: $(( $(date +%s) - s )) s" | tee -a "$log"
    for n in 1024 2048 8192; do
      echo "==== 61 layers: TTFT of a $n-token prompt" | tee -a "$log"
      sb --input-len $n --output-len 1 --num-prompts 2 --max-concurrency 1 --vocab 120000 \
         --warmup 0 --seed $n --result-file "$out/fulldepth-ttft-$n.json" 2>&1 | tail -4 | tee -a "$log"
    done
    for c in 1 4 8; do
      echo "==== 61 layers: decode at concurrency $c" | tee -a "$log"
      sb --input-len 64 --output-len 64 --num-prompts $(( c > 1 ? 2 * c : 2 )) --max-concurrency $c \
         --vocab 120000 --warmup 0 --seed $c --result-file "$out/fulldepth-decode-$c.json" 2>&1 |
          tail -2 | tee -a "$log"
    done
    echo "device memory in use (KV cache of 32K tokens): $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)" | tee -a "$log"
    echo "host RSS: $(ps -o rss= -p $srv) KiB" | tee -a "$log"
    grep -E 'plan|total|stream|load' /tmp/serve-$port.log | sed 's/^.*tandem\[[a-z]*\] //' | head -12 >> "$log"
    stop_srv
  fi
  # the ceiling with the server stopped; a token reads top_k x (one expert's bytes) per MoE layer
  dram=$(timeout 120 $tb bench cpu --quick --types q4_K 2>&1 | grep -m1 'DRAM read bandwidth')
  echo "$dram" | tee -a "$log"
  python3 - "$fd" "$dram" "$out/fulldepth-decode-1.json" <<'PY' | tee -a "$log"
import json, os, re, sys
fd, dram, dec = sys.argv[1:4]
cfg = json.load(open(os.path.join(fd, "config.json")))
gbs = float(re.findall(r"([0-9.]+) GB/s", dram)[-1]) if "GB/s" in dram else 0.0
moe = cfg["num_hidden_layers"] - cfg.get("first_k_dense_replace", 0)
per = os.path.getsize(os.path.join(fd, "experts.gguf")) / (moe * cfg["n_routed_experts"])
tok = moe * cfg["num_experts_per_tok"] * per
bound = gbs * 1e9 / tok if tok > 0 else 0
try:
    tps = 1000.0 / json.load(open(dec))[0]["tpot_ms"]["mean"]
except Exception:
    tps = 0.0
print(f"bound: {gbs:.1f} GB/s / {tok / 1e9:.2f} GB of experts a token = {bound:.2f} tokens/s; "
      f"single-stream decode {tps:.2f} tokens/s = {100 * tps / bound if bound else 0:.0f}% of it")
PY
  hm=${FULL_HOT_MB:-8000}
  cp $cf $cf.run 2> /dev/null || rm -f $cf.run
  if start_srv $fd $o --gpu.hot_experts=$hm --gpu.hot_experts_file=$cf.run; then
    echo "==== 61 layers: gpu.hot_experts=$hm" | tee -a "$log"
    grep -E 'hot experts|  hot  |  total  ' /tmp/serve-$port.log | sed 's/^.*tandem\[[a-z]*\] //' | tee -a "$log"
    r0=$(metric expert_routes_total); h0=$(metric hot_expert_routes_total)
    sb --input-len 64 --output-len 64 --num-prompts 2 --max-concurrency 1 --vocab 120000 \
       --warmup 1 --seed 1 --result-file "$out/fulldepth-hot.json" 2>&1 | tail -2 | tee -a "$log"
    r1=$(metric expert_routes_total); h1=$(metric hot_expert_routes_total)
    echo "routes on hot experts while measured: $(python3 -c "import sys; r0,r1,h0,h1=map(float,sys.argv[1:]); print(f'{100*(h1-h0)/(r1-r0):.1f}%' if r1>r0 else '-')" ${r0:-0} ${r1:-0} ${h0:-0} ${h1:-0})" | tee -a "$log"
    echo "device memory in use: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)" | tee -a "$log"
    stop_srv
    $tb inspect $fd --no-validate --context 32768 --hot-experts $hm --expert-counts $cf 2>&1 |
        sed -n '/^routing counts/,$p' | tail -8 | tee -a "$log"
  fi
fi
# gguf: issue 20's "done when" at DeepSeek-V3's dimensions: a directory holding only an
# unsloth-style gguf-split set (`convert synth --preset v3-slice --layout gguf --mla-layout split
# --split-count 4 --experts iq2_xxs/iq3_xxs --linears q8_0`: 1 dense + 2 MoE layers, 256 IQ2_XXS
# experts with IQ3_XXS down, split attn_k_b / attn_v_b, tokenizer and chat template in the
# metadata, nothing else in the directory; zero but routing like the other timing models, since
# random experts at these widths take the reference encoder ~20 CPU-minutes) serves chat
# completions: tests/integration/test_serve_gguf.mjs on it (TANDEM_TEST_MODEL), once per
# gpu.placement (hybrid, gpu). First tests/kernels/test_iquants (every ISA table's i-quant dots
# bitwise against the scalar reference: the AVX-512 ones run only on such a host), then the
# i-quant decode figures owed to docs/performance.md ("Grid i-quants"): `tandem bench cpu` for
# Q4_K beside the seven grid i-quants. Writes gguf.log and iquant-bench.log.
if has gguf; then
  log="$out/gguf.log"
  : > "$log"
  s=$(date +%s)
  iq=build-ibin/test_iquants   # carried when it loads here, else built now
  if [ ! -x $iq ] || ldd $iq | grep -q 'not found'; then
    iq=build-gpu/tests/kernels/test_iquants
    { [ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled -Dui=false -Dwerror=true; } > "$out/iq-build.log" 2>&1
    ninja -C build-gpu tests/kernels/test_iquants >> "$out/iq-build.log" 2>&1 || iq=
  fi
  if [ -n "$iq" ]; then
    echo "==== test_iquants" >> "$log"
    timeout 300 $iq >> "$log" 2>&1
    rc=$?
  else
    grep -E 'error|FAILED' "$out/iq-build.log" | head -20; rc=1
  fi
  summary+=("$(result gguf test_iquants $rc $s "$log")")
  [ $rc -eq 0 ] || { echo "---- test_iquants failed:"; tail -25 "$log"; }
  { echo "device: $device"; timeout 500 $tb bench cpu --quick \
      --types q4_K,iq2_xxs,iq3_xxs,iq1_s,iq1_m,iq2_xs,iq2_s,iq3_s --prefill 512; } \
      > "$out/iquant-bench.log" 2>&1
  grep -E 'DRAM read|^[a-z0-9_]+:|decode 1 tok|shared: 8 tok|prefill' "$out/iquant-bench.log" | tee -a "$log"
  g=/tmp/tandem-v3-gguf
  s=$(date +%s)
  [ -d $g ] || $tb convert synth --preset v3-slice --layout gguf --mla-layout split --split-count 4 \
      --experts iq2_xxs/iq3_xxs --linears q8_0 --seed 5 --zero-but-routing --out $g \
      > /dev/null 2>&1 || echo "synth v3-slice gguf failed" | tee -a "$log"
  echo "synth v3-slice gguf: $(( $(date +%s) - s )) s, $(du -sh $g | cut -f1): $(ls $g | tr '\n' ' ')" | tee -a "$log"
  for pl in hybrid gpu; do
    s=$(date +%s)
    echo "==== test_serve_gguf on $g, gpu.placement=$pl" >> "$log"
    TANDEM_BIN=$tb TANDEM_TEST_MODEL=$g TANDEM_SERVE_ARGS="--gpu.placement=$pl" \
        timeout 500 $NODE tests/integration/test_serve_gguf.mjs >> "$log" 2>&1
    rc=$?
    summary+=("$(result gguf "serve_gguf $pl" $rc $s)")
    [ $rc -eq 0 ] || { echo "---- test_serve_gguf ($pl) failed:"; tail -25 "$log"; }
  done
fi

# graph: CUDA graphs of decode steps (gpu.cuda_graphs, docs/gpu.md "CUDA graphs").
# (1) tests/gpu/test_engine_graph: replayed decode steps equal eager graph-mode ones bit for bit
# (batch 1-4, two length classes), the fused forms within the GPU-vs-CPU tolerance. (2) The
# decode step of the engine step's v3-slices (1 dense + 0 / 3 MoE layers, 256 Q4_K experts,
# --zero-but-routing) with bench_hybrid --graphs 0 and --graphs 16 at batch 1 and 8: step time,
# per MoE layer = (step3 - step0) / 3 and its ratio to the CPU expert time, for each. graph.log.
if has graph; then
  log="$out/graph.log"
  : > "$log"
  s=$(date +%s)
  TANDEM_SRC=$PWD TANDEM_BIN=$tb timeout 300 $ebin/test_engine_graph >> "$log" 2>&1
  rc=$?
  summary+=("$(result graph test_engine_graph $rc $s "$log")")
  grep -E 'graphs|paused|logits vs|FAIL|PASS' "$log" | grep -v 'tandem\['
  for nm in 0 3; do
    [ -d /tmp/tandem-v3z$nm ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers $nm \
        --experts-n 256 --experts q4_K --zero-but-routing --out /tmp/tandem-v3z$nm > /dev/null 2>&1 ||
        echo "synth v3-slice failed"
  done
  for g in 0 16; do
    for bs in 1 8; do
      for nm in 0 3; do
        echo "==== bench_hybrid v3-slice 1 dense + $nm MoE, batch $bs, --graphs $g" | tee -a "$log"
        timeout 60 $ebin/bench_hybrid --model /tmp/tandem-v3z$nm --batch $bs --steps 32 --prompt 256 \
            --graphs $g 2>&1 | grep -v 'tandem\[' | tee -a "$log" > /tmp/bg-$g-$nm-$bs.txt
      done
      awk -v bs=$bs -v g=$g '/mean .* ms\/step/ { for (i = 1; i <= NF; i++) if ($i == "mean") s[FILENAME] = $(i + 1) }
           /CPU experts/ { for (i = 1; i <= NF; i++) if ($i == "experts") e[FILENAME] = $(i + 1) }
           END { s0 = s["/tmp/bg-" g "-0-" bs ".txt"]; s3 = s["/tmp/bg-" g "-3-" bs ".txt"]; per = (s3 - s0) / 3;
                 ex = e["/tmp/bg-" g "-3-" bs ".txt"];
                 printf "graphs %d, batch %d: per MoE layer %.3f ms = CPU experts %.3f + GPU critical path %.3f: ratio %.2f; fixed per step %.3f ms\n", g, bs, per, ex, per - ex, per / ex, s0 }' \
          /tmp/bg-$g-0-$bs.txt /tmp/bg-$g-3-$bs.txt | tee -a "$log"
    done
  done
fi

# hot: hot experts (gpu.hot_experts, docs/gpu.md "Hot experts"). (1) tests/gpu/test_engine_hot:
# hot placement against all-CPU placement (uniform choice, choice from counts, every expert, with
# streaming). (2) A v3-slice (1 dense + 3 MoE layers, 256 Q4_K experts of 23.6 MiB: 768 experts,
# 17.7 GiB; --zero-but-routing) served hybrid with a small KV cache (model.context 4096,
# engine.max_running 8, so `auto` has room): a first server without hot experts records the
# routing counts of HOT_WARM (32) random prompts into gpu.hot_experts_file (written at shutdown);
# then, for each gpu.hot_experts value of HOT_SIZES (default "off 4600 9100 auto": none, about a
# quarter and half of the experts, and all the free memory, which holds every expert of this
# slice), a server started on a copy of that file (so every run chooses from the same counts)
# measures single-stream decode with serve_bench (64-token prompts, 128 tokens, 4 requests one at
# a time, other prompts than the warm-up's): decode tokens/s = 1000 / mean TPOT, the measured hot
# share of the routes (/metrics: hot_expert_routes_total / expert_routes_total), device memory in
# use (nvidia-smi) and the start-up log's hot-experts and plan lines. (3) The routing histogram of
# the recorded counts (`tandem inspect --expert-counts`: per MoE layer the share of its routes
# taken by its most routed 1 / 5% / 10% / 25% / 50% of experts, and the share the plan's hot set of
# each size would take). Writes hot.log and hot-*.json.
if has hot; then
  log="$out/hot.log"
  : > "$log"
  s=$(date +%s)
  TANDEM_SRC=$PWD TANDEM_BIN=$tb timeout 300 $ebin/test_engine_hot >> "$log" 2>&1
  rc=$?
  summary+=("$(result hot test_engine_hot $rc $s "$log")")
  grep -E 'hot:|calls on layers|logits vs|note|FAIL|PASS' "$log"
  v3=/tmp/tandem-v3r
  [ -d $v3 ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 3 --experts-n 256 \
      --experts q4_K --seed 5 --zero-but-routing --out $v3 > /dev/null 2>&1 || echo "synth v3-slice failed" | tee -a "$log"
  cf=/tmp/tandem-hot.counts
  rm -f $cf
  o="--model.template=deepseek-v3 --gpu.placement hybrid --model.context=4096 --engine.max_running=8"
  if start_srv $v3 $o --gpu.hot_experts_file=$cf; then
    echo "==== hot: recording the routing counts (${HOT_WARM:-32} prompts, no hot experts)" | tee -a "$log"
    sb --input-len 64 --output-len 128 --num-prompts ${HOT_WARM:-32} --max-concurrency 4 --vocab 120000 \
       --warmup 0 --seed 11 2>&1 | tail -2 | tee -a "$log"
    stop_srv
  fi
  for hs in ${HOT_SIZES:-off 4600 9100 auto}; do
    cp $cf $cf.run 2> /dev/null || rm -f $cf.run
    start_srv $v3 $o --gpu.hot_experts=$hs --gpu.hot_experts_file=$cf.run || continue
    echo "==== hot: gpu.hot_experts=$hs" | tee -a "$log"
    grep -E 'hot experts|  hot  |  total  ' /tmp/serve-$port.log | sed 's/^.*tandem\[[a-z]*\] //' | tee -a "$log"
    r0=$(metric expert_routes_total); h0=$(metric hot_expert_routes_total)
    sb --input-len 64 --output-len 128 --num-prompts 4 --max-concurrency 1 --vocab 120000 \
       --warmup 1 --seed 3 --result-file "$out/hot-$hs.json" 2>&1 | tail -2 | tee -a "$log"
    r1=$(metric expert_routes_total); h1=$(metric hot_expert_routes_total)
    echo "device memory in use: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)" | tee -a "$log"
    python3 - "$out/hot-$hs.json" "$hs" "${r0:-0}" "${r1:-0}" "${h0:-0}" "${h1:-0}" "$(metric hot_experts)" <<'PY' | tee -a "$log" "$out/hot-summary.txt"
import json, sys
f, hs, r0, r1, h0, h1, n = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7]), sys.argv[7]
try:
    d = json.load(open(f))[0]
    tps = 1000.0 / d["tpot_ms"]["mean"]
except Exception as e:
    print(f"gpu.hot_experts={hs}: no result ({e})"); sys.exit(0)
share = (h1 - h0) / (r1 - r0) if r1 > r0 else 0.0
print(f"gpu.hot_experts={hs}: {n or 0} hot experts, single-stream decode {tps:.2f} tokens/s, "
      f"{100 * share:.1f}% of the measured routes on hot experts")
PY
    stop_srv
  done
  echo "==== hot: decode tokens/s by gpu.hot_experts (the ratio to off beside 1 / (1 - hot share): the" \
       "speed-up if the step time were the CPU experts' alone)" | tee -a "$log"
  awk '/single-stream decode/ { for (i = 1; i <= NF; i++) { if ($i == "decode") t = $(i + 1); if ($i == "of") p = $(i - 1) }
         sub(/%/, "", p); p += 0; if ($1 ~ /=off:/) base = t;
         printf "%s decode %s tokens/s, x%.2f of off; 1 / (1 - share) = %.2f\n", $1, t, base ? t / base : 0, p < 100 ? 100 / (100 - p) : 0 }' \
      "$out/hot-summary.txt" | tee -a "$log"
  rm -f "$out/hot-summary.txt"
  echo "==== hot: routing histogram of the recorded counts ($cf)" | tee -a "$log"
  for hs in 4600 9100; do
    $tb inspect $v3 --no-validate --context 4096 --hot-experts $hs --expert-counts $cf 2>&1 |
        sed -n '/^routing counts/,$p' | { [ $hs = 4600 ] && cat || grep '^hot experts'; } | tee -a "$log"
  done
fi

# defer: expert deferral (engine.defer_experts, docs/gpu.md): (1) tests/gpu/test_engine_defer (the
# hybrid backend with 0/1/2 deferred experts against the CPU engine's same deferral). (2)
# bench_hybrid --batch 1 --steps 32 --prompt 256 on the zero-but-routing v3-slice with 1 dense + 3
# MoE layers (the engine step's), --defer 0, 1, 2, the sweep twice: decode ms/step and tokens/s,
# the CPU experts' share and the GPU idle time per MoE layer. Writes defer.log.
if has defer; then
  log="$out/defer.log"
  : > "$log"
  s=$(date +%s)
  TANDEM_SRC=$PWD TANDEM_BIN=$tb timeout 300 $ebin/test_engine_defer >> "$log" 2>&1
  rc=$?
  summary+=("$(result defer test_engine_defer $rc $s "$log")")
  grep -E 'CPU|jobs|logits vs|median|FAIL|PASS' "$log"
  [ -d /tmp/tandem-v3z3 ] || $tb convert synth --preset v3-slice --dense-layers 1 --moe-layers 3 \
      --experts-n 256 --experts q4_K --zero-but-routing --out /tmp/tandem-v3z3 > /dev/null 2>&1 ||
      echo "synth v3-slice failed" | tee -a "$log"
  for rep in 1 2; do
    for d in 0 1 2; do
      echo "==== bench_hybrid v3-slice 1 dense + 3 MoE, batch 1, --defer $d (sweep $rep)" | tee -a "$log"
      timeout 90 $ebin/bench_hybrid --model /tmp/tandem-v3z3 --batch 1 --steps 32 --prompt 256 \
          --defer $d 2>&1 | grep -E 'decode:|per MoE layer|step time' | tee -a "$log"
    done
  done
fi

if [ -f "$out/tests.log" ]; then
  echo
  echo "==== tests: worst error/tolerance per check (full log: tests.log)"
  grep -E 'worst|exact|NOTE|Frobenius' "$out/tests.log" | grep -v ' again' | sed 's/  */ /g' | cut -c1-110
fi
if [ -f "$out/sanitize.log" ]; then
  echo
  echo "==== compute-sanitizer memcheck"
  grep -E 'ERROR SUMMARY|Invalid|error' "$out/sanitize.log" | sort | uniq -c | head -20
fi
if [ -f "$out/bench.log" ]; then
  echo
  echo "==== bench (full table: bench-full.txt)"
  grep -v 'tandem\[gemm\]' "$out/bench.log"
fi
echo
printf '%s\n' "${summary[@]}"
# The device tool brings back at most 8 files from $OUT: the JSON results (serve_bench's, the
# eval's) go into one archive when there are more than that many files.
if [ "$(find "$out" -type f | wc -l)" -gt 8 ] && ls "$out"/*.json > /dev/null 2>&1; then
  tar -czf "$out/results-json.tgz" -C "$out" $(cd "$out" && ls *.json) && rm -f "$out"/*.json
fi
