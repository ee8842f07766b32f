#!/usr/bin/env bash
# Idempotent setup on a fresh Debian/Ubuntu machine: system packages, a virtualenv, torch, then
# the exact versions of requirements.lock and this project (editable, with its test extras).
#   TORCH_SPEC  torch requirement (default torch==2.13.0, a CPU build here; TORCH_SPEC=torch for CUDA)
#   VENV        virtualenv directory (default .venv)
#   DEPS=latest ignore the lock: newest releases allowed by pyproject's ranges (upgrade check)
set -euo pipefail
cd "$(dirname "$0")"
# espeak-ng speaks the tiny profile's corpus; chromium renders the report in its browser test
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
if [ "${DEPS:-lock}" = latest ]; then
    "$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
else
    "$VENV/bin/python" -m pip install -q -r requirements.lock
    "$VENV/bin/python" -m pip install -q --no-deps -e '.[dev]'
fi
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
"$VENV/bin/python" -c "import transformers, torch; print(f'setup: transformers {transformers.__version__}, torch {torch.__version__}')"
