#!/bin/sh
# test_format.sh - every C, CUDA and header file of the tree is formatted as .clang-format says.
# Formatting differs between clang-format releases, so the check runs with the release the tree
# is formatted with (14, Debian 12's; scripts/setup.sh installs it) and skips (77) otherwise.
# To fix a failure: clang-format -i FILE (the failing files are listed).
set -u
cd "${TANDEM_SRC:?}" || exit 1
command -v clang-format >/dev/null 2>&1 || { echo "clang-format not installed: skipped"; exit 77; }
v=$(clang-format --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p')
[ "$v" = 14 ] || { echo "clang-format $v, the tree is formatted with 14: skipped"; exit 77; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
else
  files=$(find common config kernels engine server tests -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
fi
bad=0
for f in $files; do
  [ -f "$f" ] || continue
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || { echo "not formatted: $f"; bad=$((bad + 1)); }
done
echo "$bad file(s) not formatted"
[ "$bad" -eq 0 ]
