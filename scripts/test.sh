#!/bin/sh
# test.sh - the README's second command (and CI's): set up, build with warnings as errors, run
# every test suite, then the AVX-512 / AMX kernels under emulation (scripts/amx-emu-check.sh), the
# sanitizer build (ASan + UBSan, leak checks: scripts/sanitize.sh), the
# bounded libFuzzer runs (scripts/fuzz.sh) and the ThreadSanitizer pass over the threaded tests
# (scripts/tsan.sh), and end with "N passed, N failed, N skipped".
# TANDEM_QUICK=1 skips the emulation, sanitizer, fuzz and TSan passes (for quick local iterations only).
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
# npm ci again when the lock file changed since the last install (new client packages)
if [ -f tests/package.json ] && { [ ! -d tests/node_modules ] ||
    [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; }; then
  (cd tests && npm ci --no-audit --no-fund --loglevel=error) >&2
fi
scripts/default-model.sh >/dev/null
set +e
meson test -C build --print-errorlogs --num-processes "$(nproc)" "$@" > build/test-output.txt 2>&1
rc=$?
set -e
grep -E '^ *[0-9]+/[0-9]+ ' build/test-output.txt || cat build/test-output.txt
ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' build/test-output.txt)
fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' build/test-output.txt)
xpass=$(sed -n 's/^Unexpected Pass: *\([0-9]*\).*/\1/p' build/test-output.txt)
tmo=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' build/test-output.txt)
skip=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' build/test-output.txt)
ok=${ok:-0}; fail=${fail:-0}; xpass=${xpass:-0}; tmo=${tmo:-0}; skip=${skip:-0}
failed=$((fail + xpass + tmo))
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1   # meson itself failed (e.g. a build error): never report green
  cat build/test-output.txt
fi

# "<name>: N passed, N failed" from the last line of a pass's output, added to the totals
extra() {
  line=$(tail -1 "$1")
  p=$(echo "$line" | sed -n 's/^[a-z]*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
  f=$(echo "$line" | sed -n 's/^[a-z]*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
  if [ -z "$p" ]; then p=0; f=1; tail -40 "$1"; fi
  [ "$f" -ne 0 ] && tail -60 "$1"
  echo "$line"
  ok=$((ok + p)); failed=$((failed + f))
}
if [ "${TANDEM_QUICK:-0}" != 1 ]; then
  # the AVX-512 and AMX kernels against the scalar reference under emulation (this machine may
  # have neither; the real ISA runs on the GPU host: docs/performance.md, "CPU kernels")
  if scripts/amx-emu-check.sh > build/emu-output.txt 2>&1; then
    echo "emu: 1 passed, 0 failed" >> build/emu-output.txt
  else
    echo "emu: 0 passed, 1 failed" >> build/emu-output.txt
  fi
  extra build/emu-output.txt
  scripts/sanitize.sh > build/sanitize-output.txt 2>&1 || true   # counted below
  extra build/sanitize-output.txt
  if command -v clang >/dev/null 2>&1; then
    scripts/fuzz.sh > build/fuzz-output.txt 2>&1 || true
    extra build/fuzz-output.txt
    scripts/tsan.sh > build/tsan-output.txt 2>&1 || true
    extra build/tsan-output.txt
  else
    echo "fuzz: skipped (clang not installed)"; skip=$((skip + 1))
    echo "tsan: skipped (clang not installed)"; skip=$((skip + 1))
  fi
fi
echo "$ok passed, $failed failed, $skip skipped"
[ "$failed" -eq 0 ]
