#!/usr/bin/env bash
# Install what Switchyard needs to run and test on Debian/Ubuntu: redis-server (7.0 or newer),
# plus any commands named as arguments, each from the Debian package of the same name
# (`scripts/setup.sh chromium` for the dashboard's browser test, `docker-compose` for the
# deployment files' checks, `wrk` for the benchmarks) — `systemd-analyze` comes with `systemd`.
# `python3-venv` names no command: it asks for python3 able to make a venv with pip (the OpenAPI
# document's validator is installed into one, scripts/tools.sh).
# As root it installs through apt; otherwise it prints the exact command to run.
set -euo pipefail

need=()
for cmd in redis-server "$@"; do
  case "$cmd" in
    python3-venv)
      if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then need+=(python3 python3-venv); fi
      continue
      ;;
  esac
  if ! command -v "$cmd" >/dev/null 2>&1; then
    case "$cmd" in
      systemd-analyze) need+=(systemd) ;;
      *) need+=("$cmd") ;;
    esac
  fi
done

if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged service; Switchyard's tests and `make run` manage their own.
else
  echo "setup: missing ${need[*]}. Install with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
