#!/bin/sh
# setup.sh - install what is missing (Debian 12, apt), configure and build tandem into build/.
# Run it directly, or let scripts/serve.sh and scripts/test.sh call it. Idempotent: tools are
# checked as commands and libraries through pkg-config, so an existing Node.js (e.g. from
# NodeSource, which bundles npm) is used as it is.
set -eu
cd "$(dirname "$0")/.."

missing=""
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need_pc() { pkg-config --exists "$1" 2>/dev/null || missing="$missing $2"; }
need_cmd meson meson
need_cmd ninja ninja-build
need_cmd pkg-config pkg-config
need_cmd cc gcc
need_cmd curl curl
need_cmd python3 python3
need_cmd clang clang
need_cmd clang-format clang-format
need_cmd node nodejs   # node and npm: the chat page's libraries are bundled at build time
# tests/fault/test_replicas.mjs, deploy/haproxy (in /usr/sbin, off a user's PATH)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v node >/dev/null 2>&1 && ! command -v npm >/dev/null 2>&1 && missing="$missing npm"
need_cmd chromium chromium   # the chat page's browser tests (tests/integration/test_ui.mjs)
# SIMDe's headers: scripts/amx-emu-check.sh runs the AVX-512 / AMX kernels where the CPU has neither
[ -f /usr/include/simde/x86/avx512.h ] || missing="$missing libsimde-dev"
if command -v pkg-config >/dev/null 2>&1; then
  need_pc libmicrohttpd libmicrohttpd-dev
  need_pc jansson libjansson-dev
  need_pc libuv libuv1-dev
  need_pc inih libinih-dev
  need_pc libpcre2-8 libpcre2-dev
  need_pc libsystemd libsystemd-dev
else
  missing="$missing libmicrohttpd-dev libjansson-dev libuv1-dev libinih-dev libpcre2-dev libsystemd-dev"
fi
if [ -n "$missing" ]; then
  echo "setup: installing$missing" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# nvcc, when the CUDA toolkit is installed, lets meson build the CUDA kernels (option cuda=auto).
if [ -d /usr/local/cuda/bin ]; then PATH=/usr/local/cuda/bin:$PATH; export PATH; fi

if [ ! -f build/build.ninja ]; then
  meson setup build -Dwerror=true > build-setup.log 2>&1 || { cat build-setup.log; exit 1; }
  rm -f build-setup.log
fi
ninja -C build > build/ninja.log 2>&1 || { cat build/ninja.log; exit 1; }
