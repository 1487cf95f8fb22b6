#!/usr/bin/env bash
# Install everything the project needs into ./.venv (Python 3.11), from this repo's own files.
# Debian packages (speech synthesis for the local corpus, Chromium for the log-page test) are
# installed when apt-get is usable; everything Python comes from pyproject.toml's exact pins.
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
for pkg in espeak-ng flite sox chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || want+=("$pkg")
done
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install: Debian packages ${want[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
  else
    echo "install: missing Debian packages ${want[*]} (need root); the tests that use them will skip" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"need Python 3.11, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "install: Python packages into .venv (first time: several minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
echo "install: done (.venv/bin/soda --help)"
