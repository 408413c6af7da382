#!/usr/bin/env bash
# Fetch a tool the tests need into ~/.cache/switchyard-tools without installing its package (no
# service is started, nothing outside the cache changes), and print its path.
#   scripts/tools.sh promtool   # from Debian's `prometheus` package
set -euo pipefail

dir="${SWITCHYARD_TOOLS_DIR:-$HOME/.cache/switchyard-tools}"
tool="${1:?usage: scripts/tools.sh promtool}"
case "$tool" in
  promtool) pkg=prometheus; path=usr/bin/promtool ;;
  *) echo "tools: unknown tool $tool" >&2; exit 2 ;;
esac

if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; exit 0; fi
if [[ -x "$dir/$path" ]]; then echo "$dir/$path"; exit 0; fi
command -v apt-get >/dev/null 2>&1 || { echo "tools: install $tool (Debian package $pkg)" >&2; exit 1; }

mkdir -p "$dir/debs"
cd "$dir/debs"
if ! apt-get download "$pkg" >/dev/null 2>&1; then
  # The package lists may be missing on a fresh machine.
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq >/dev/null; fi
  apt-get download "$pkg" >/dev/null
fi
dpkg-deb -x "$(ls -t "$pkg"_*.deb | head -n 1)" "$dir"
echo "$dir/$path"
