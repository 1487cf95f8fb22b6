#!/usr/bin/env bash
# Install everything the project needs into ./.venv (Python 3.11), from this repo's own files.
#
#   bash infra/install.sh [--accelerator cpu|tpu|gpu] [--dry-run]
#
# Debian packages (speech synthesis for the local corpus, Chromium for the log-page test) are
# installed when apt-get is usable; everything Python comes from pyproject.toml's exact pins.
# --accelerator adds the JAX build of the node's accelerator (pyproject's `tpu` or `gpu` extra,
# the same jax version): cpu (the default) installs the pins alone. --dry-run prints the pip
# command for the accelerator and exits (tests/test_install_extras.py reads it).
set -euo pipefail
cd "$(dirname "$0")/.."

accelerator=cpu
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --accelerator) accelerator=${2:-}; shift 2 || { echo "install: --accelerator needs a value: cpu, tpu or gpu" >&2; exit 2; } ;;
    --accelerator=*) accelerator=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) echo "install: unknown argument '$1' (usage: bash infra/install.sh [--accelerator cpu|tpu|gpu] [--dry-run])" >&2; exit 2 ;;
  esac
done
case "$accelerator" in
  cpu) extras="test" ;;
  tpu) extras="test,tpu" ;;
  gpu) extras="test,gpu" ;;
  *) echo "install: --accelerator '$accelerator': choose cpu, tpu or gpu" >&2; exit 2 ;;
esac
pip_install=(.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]")
if [ "$dry_run" = 1 ]; then
  echo "${pip_install[*]}"
  exit 0
fi

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
echo "install: Python packages into .venv, accelerator $accelerator (first time: several minutes)"
"${pip_install[@]}"
echo "install: done (.venv/bin/soda --help)"
