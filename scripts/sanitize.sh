#!/bin/sh
# sanitize.sh - AddressSanitizer + UndefinedBehaviorSanitizer build of everything (CPU only), its
# test suites, and a leak check of the daemon over mixed requests (LeakSanitizer at exit).
# Ends with "sanitize: N passed, N failed"; exit status non-zero on any failure.
#
#   scripts/sanitize.sh                    # suites unit server text weights engine integration fault
#   SANITIZE_SUITES="server text" scripts/sanitize.sh
#
# Environment: ASAN_BUILD (build dir, default build-asan), SANITIZE_SUITES, LEAK_REQUESTS
# (requests per leak check, default 1000). The slow suite and the benchmarks are not run.
# A sanitizer report makes the process abort (halt_on_error), so the test that ran it fails; the
# daemon tests check their daemon's exit status, so a leak in the daemon fails them too.
set -u
cd "$(dirname "$0")/.."
B=${ASAN_BUILD:-build-asan}
SUITES=${SANITIZE_SUITES:-unit server text weights engine integration fault}
NREQ=${LEAK_REQUESTS:-1000}

if [ ! -f "$B/build.ninja" ]; then
  meson setup "$B" -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled \
    -Dwerror=true >"$B.setup.log" 2>&1 || { cat "$B.setup.log"; echo "sanitize: 0 passed, 1 failed"; exit 1; }
fi
if ! ninja -C "$B" >"$B/sanitize-build.log" 2>&1; then
  tail -40 "$B/sanitize-build.log"; echo "sanitize: 0 passed, 1 failed"; exit 1
fi
if [ -f tests/package.json ] && { [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; }; then   # missing or stale
  (cd tests && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:print_summary=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:print_summary=1
export TANDEM_SANITIZED=1
args=""
for s in $SUITES; do args="$args --suite $s"; done
# shellcheck disable=SC2086
meson test -C "$B" $args --no-suite slow --timeout-multiplier 4 --num-processes "$(nproc)" \
  --print-errorlogs >"$B/sanitize-test.txt" 2>&1
grep -E '^ *[0-9]+/[0-9]+ ' "$B/sanitize-test.txt"
ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$B/sanitize-test.txt")
fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$B/sanitize-test.txt")
tmo=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$B/sanitize-test.txt")
pass=${ok:-0}; failed=$(( ${fail:-0} + ${tmo:-0} ))
if [ "$failed" -gt 0 ]; then
  grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY:' "$B/sanitize-test.txt" | head -20
  # the failed assertions of node tests and C tests, so a CI log shows why
  grep -E -A3 '^ *not ok |^ *error: |FAIL[: ]|Assertion' "$B/sanitize-test.txt" | head -60
fi

# leak checks: the fake-engine daemon (every HTTP path) and the real engine on models/default
tmp=$(mktemp -d)
for pair in "$B/tests/server/tandem-fake:$tmp/fake-model" "$B/tandem:models/default"; do
  bin=${pair%%:*}; model=${pair#*:}
  if [ ! -x "$bin" ] || { [ "$model" = models/default ] && [ ! -f models/default/config.json ]; }; then
    echo "sanitize: leak check with $bin skipped (missing)"; continue
  fi
  if node tests/fault/leak_check.mjs "$bin" "$model" "$NREQ" >"$tmp/leak.txt" 2>&1; then
    pass=$((pass + 1)); grep '^leak-check:' "$tmp/leak.txt" | sed "s|^|$(basename "$bin") |"
  else
    failed=$((failed + 1)); echo "sanitize: leak check with $bin FAILED:"; tail -60 "$tmp/leak.txt"
  fi
done
rm -rf "$tmp"
echo "sanitize: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
