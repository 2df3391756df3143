#!/bin/sh
# tsan.sh - ThreadSanitizer build (clang, CPU only) and the tests that run several threads: the
# engine thread with its sampling workers and the scheduler (test_engine, test_sched), the
# expert worker pool and the routed experts on it (test_wpool, test_moe), and the daemon with its
# HTTP thread pool, main loop and engine thread, over the fake engine (serve_fake, fault_fake)
# and the real one on the tiny synthetic model (serve_real, fault_real): requests, streams,
# disconnects, cancellation, overload and drain. The structured-output test is left out (over
# five minutes under TSan on two cores; its threads are the ones serve_real runs). Ends with
# "tsan: N passed, N failed"; exit status non-zero on any failure.
#
#   scripts/tsan.sh                         # the tests above
#   TSAN_TESTS="test_engine serve_fake" scripts/tsan.sh
#
# Environment: TSAN_BUILD (build dir, default build-tsan), TSAN_TESTS (meson test names),
# TSAN_TARGETS (the ninja targets those tests need; only these are built, which keeps the pass
# short and leaves out the libFuzzer targets, whose ASan flags cannot be combined with TSan).
# A data race or other report makes the process exit at once (halt_on_error, exit code 66), so
# the test that ran it fails; the daemon tests check their daemon's exit status, so a report in
# the daemon fails them too. No suppressions: every report is a finding to fix at its cause.
set -u
cd "$(dirname "$0")/.."
B=${TSAN_BUILD:-build-tsan}
TESTS=${TSAN_TESTS:-test_engine test_sched test_wpool test_moe serve_fake fault_fake serve_real \
  fault_real}
TARGETS=${TSAN_TARGETS:-tandem tests/server/tandem-fake tests/integration/notify_listen \
  tests/engine/test_engine tests/engine/test_sched tests/kernels/test_wpool tests/kernels/test_moe}

if [ ! -f "$B/build.ninja" ]; then
  # werror off here only: clang warns where gcc (the werror build) does not
  CC=clang meson setup "$B" -Db_sanitize=thread -Db_lundef=false -Dcuda=disabled \
    -Dwerror=false >"$B.setup.log" 2>&1 || {
    cat "$B.setup.log"; echo "tsan: 0 passed, 1 failed"; exit 1; }
fi
# shellcheck disable=SC2086
if ! ninja -C "$B" $TARGETS >"$B/tsan-build.log" 2>&1; then
  tail -40 "$B/tsan-build.log"; echo "tsan: 0 passed, 1 failed"; exit 1
fi
if [ -f tests/package.json ] && { [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; }; then   # missing or stale
  (cd tests && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

# second_deadlock_stack: both stacks of a lock-order inversion; history_size 4: deeper access
# history, so that the earlier access of a race is reported with its stack
export TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1:history_size=4
# shellcheck disable=SC2086
meson test -C "$B" --no-rebuild $TESTS --timeout-multiplier 4 --num-processes "$(nproc)" \
  --print-errorlogs >"$B/tsan-test.txt" 2>&1
grep -E '^ *[0-9]+/[0-9]+ ' "$B/tsan-test.txt"
ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$B/tsan-test.txt")
skip=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$B/tsan-test.txt")
fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$B/tsan-test.txt")
tmo=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$B/tsan-test.txt")
pass=${ok:-0}; failed=$(( ${fail:-0} + ${tmo:-0} ))
if [ -z "$ok" ] && [ -z "$fail" ]; then
  tail -40 "$B/tsan-test.txt"; failed=1   # meson itself failed: never report green
fi
if [ "$failed" -gt 0 ]; then   # the reports in full (meson's own output keeps 100 lines a test)
  grep -E -A40 'WARNING: ThreadSanitizer' "$B/meson-logs/testlog.txt" | head -160
fi
[ "${skip:-0}" -gt 0 ] && echo "tsan: ${skip} skipped (see $B/tsan-test.txt)"
echo "tsan: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
