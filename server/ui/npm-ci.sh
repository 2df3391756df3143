#!/bin/sh
# npm-ci.sh SRC_DIR OUT_DIR STAMP - install the chat page's npm packages (server/ui/package.json,
# exact versions from package-lock.json) into OUT_DIR/node_modules in the build tree, for
# embed.py. Needs node and npm (scripts/setup.sh installs them) and the npm registry or its
# cache (npm_config_offline=true builds from the cache alone).
set -eu
src=$1 out=$2 stamp=$3
if ! command -v npm >/dev/null 2>&1; then
  echo "npm-ci.sh: npm not found: the chat page bundles npm packages at build time." >&2
  echo "Install nodejs and npm (scripts/setup.sh does), or configure with -Dui=false." >&2
  exit 1
fi
mkdir -p "$out"
cp "$src/package.json" "$src/package-lock.json" "$out/"
(cd "$out" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
touch "$stamp"
