#!/bin/sh
# test_systemd.sh TANDEM_BIN - `systemd-analyze verify` accepts systemd/tandem.service,
# tandem.socket and the replica template tandem@.service (as instance tandem@1.service), with
# ExecStart pointed at the built binary. Skips without systemd-analyze.
set -u
bin=$1
command -v systemd-analyze >/dev/null 2>&1 || { echo "SKIP: no systemd-analyze"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/tandem|$bin|" "$TANDEM_SRC/systemd/tandem.service" > "$dir/tandem.service"
cp "$TANDEM_SRC/systemd/tandem.socket" "$dir/tandem.socket"
sed "s|/usr/local/bin/tandem|$bin|" "$TANDEM_SRC/systemd/tandem@.service" > "$dir/tandem@.service"
cp "$dir/tandem@.service" "$dir/tandem@1.service"
out=$(systemd-analyze verify --man=no "$dir/tandem.service" "$dir/tandem.socket" \
      "$dir/tandem@1.service" 2>&1)
rc=$?
# outside a booted systemd (containers, CI) verify may complain about the host itself; only
# messages naming our units count
ours=$(printf '%s\n' "$out" | grep -E 'tandem(@1?)?\.(service|socket)' || true)
if [ -n "$ours" ]; then
  printf '%s\n' "$out" >&2
  echo "FAIL: systemd-analyze verify reported problems in the units" >&2
  exit 1
fi
if [ $rc -ne 0 ]; then
  printf '%s\n' "$out" >&2
  echo "note: systemd-analyze verify exited $rc without naming our units (host environment)" >&2
fi
exit 0
