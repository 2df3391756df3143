#!/bin/sh
# repeat-seeds.sh - run tests that draw fresh random seeds many times and report every failure
# with the seed that replays it (TANDEM_TEST_SEED=...). A randomized test must not flake: the
# target is 0 failures.
#
# usage: scripts/repeat-seeds.sh [-n N] [-C BUILD] [TEST ...]
#   -n N      runs per test (default 200)
#   -C BUILD  the meson build directory (default build)
#   TEST      meson test names (default: every test that draws fresh seeds and runs in seconds)
# Ends with "repeat: N runs, N failed"; exit 1 when any run failed.
set -eu
cd "$(dirname "$0")/.."
n=200
build=build
while getopts n:C: o; do
  case $o in
    n) n=$OPTARG ;;
    C) build=$OPTARG ;;
    *) echo "usage: $0 [-n N] [-C BUILD] [TEST ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- test_quant_roundtrip test_ggml_ref test_simd_kernels test_moe test_router \
  test_mla_cpu test_requant_fp8 constrain jsonschema test_constraint test_sched test_engine \
  test_hparams model_layouts tok_diff tmpl_diff jinja_diff jinja test_sampler

total=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
  meson test -C "$build" --no-rebuild --repeat "$n" --num-processes "$(nproc)" "$t" > "$log" 2>&1 || true
  ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$log")
  bad=$(( $(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$log") + $(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$log") ))
  ok=${ok:-0}
  total=$((total + ok + bad))
  failed=$((failed + bad))
  echo "$t: $((ok + bad)) runs, $bad failed"
  if [ "$bad" -gt 0 ]; then
    # the seeds of the failed runs, from meson's log of this invocation
    awk 'function flush() { if (bad) print "  " (seed != "" ? seed : "(no seed printed)"); bad = 0; seed = "" }
         /^=+ [0-9]+\/[0-9]+ =+$/ { flush() }
         /TANDEM_TEST_SEED=/ { seed = $0 }
         /^result: +(exit status [1-9]|killed|timed out)/ { bad = 1 }
         END { flush() }' \
      "$build/meson-logs/testlog.txt" | sort -u
  fi
done
echo "repeat: $total runs, $failed failed"
[ "$failed" -eq 0 ]
