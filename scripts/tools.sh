#!/usr/bin/env bash
# Fetch a tool the tests need into ~/.cache/switchyard-tools without installing its package (no
# service is started, nothing outside the cache changes), and print its path.
#   scripts/tools.sh promtool                 # from Debian's `prometheus` package
#   scripts/tools.sh openapi-spec-validator   # from PyPI, into a venv (with jsonschema); needs
#                                             # python3 and its venv (scripts/setup.sh python3-venv)
set -euo pipefail

dir="${SWITCHYARD_TOOLS_DIR:-$HOME/.cache/switchyard-tools}"
tool="${1:?usage: scripts/tools.sh promtool|openapi-spec-validator}"

if [[ $tool == openapi-spec-validator ]]; then
  venv="$dir/venv"
  exe="$venv/bin/openapi-spec-validator"
  # Tests run in parallel: one makes the venv, the others wait for it.
  mkdir -p "$dir"
  exec 9>"$dir/venv.lock"
  flock 9
  if [[ -x $exe ]] && "$venv/bin/python" -c 'import openapi_spec_validator, jsonschema' 2>/dev/null; then
    echo "$exe"
    exit 0
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "tools: $tool needs python3 with venv: scripts/setup.sh python3-venv" \
      "(or apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'openapi-spec-validator==0.9.*' 'jsonschema>=4.18,<5' >&2
  echo "$exe"
  exit 0
fi

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
