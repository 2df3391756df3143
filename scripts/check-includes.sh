#!/bin/sh
# check-includes.sh SRC_ROOT STAMP - the include rule of the layered build (meson.build): in the
# library sources (common, config, kernels, engine, server), a quoted #include names either a file
# of the same folder ("qtype.h") or a path from the repository root ("kernels/cpu/qtype.h"),
# never "../". A root path resolves only through the layer's own include root, so an upward
# include fails to compile; this check closes the "../" way around it. Writes STAMP when clean.
set -eu
root=$1
bad=$(cd "$root" && find common config kernels engine server -type f \
        \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.def' \) |
      while read -r f; do
        sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
        while read -r i; do
          case $i in
            *../*|./*) echo "$f: #include \"$i\" (write it from the repository root)" ;;
            */*) [ -e "$i" ] || echo "$f: #include \"$i\" (no such file from the root)" ;;
            *) [ -e "$(dirname "$f")/$i" ] || echo "$f: #include \"$i\" (not in $(dirname "$f")/)" ;;
          esac
        done
      done)
if [ -n "$bad" ]; then
  echo "$bad" >&2
  exit 1
fi
touch "$2"
