#!/usr/bin/env bash
# Installs the Debian packages pysparse needs, if any is missing (a fast no-op otherwise).
# With EMSDK set (emsdk's environment), Debian's emscripten is not required.
set -euo pipefail

packages=(chromium libcairo2 fonts-noto-color-emoji fonts-symbola gnome-backgrounds libsimde-dev clang-16 lld-16 clang-14 libclang-rt-14-dev nodejs npm)
if [ -z "${EMSDK:-}" ]; then
  packages+=(emscripten binaryen)
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    # a tool installed outside apt (node, npm) counts as present
    case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
