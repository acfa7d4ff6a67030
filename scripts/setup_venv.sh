#!/usr/bin/env bash
# Create .venv and install gdsl with its test dependencies.
# torch: where the system Python already has one (e.g. a GPU machine with a CUDA build), the venv
# reuses it through --system-site-packages; otherwise the CPU build torch==2.13.0 is installed
# first, so that the unpinned requirement never pulls a multi-GB CUDA build.
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c "import torch" >/dev/null 2>&1; then
        echo "setup: reusing the system torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
        "$PY" -m venv --system-site-packages "$VENV"
    else
        "$PY" -m venv "$VENV"
    fi
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q torch==2.13.0
fi
"$VENV/bin/pip" install -q -e ".[test]"
"$VENV/bin/python" -c "import torch, gdsl; print('setup: torch', torch.__version__, '| gdsl', gdsl.__version__)"
