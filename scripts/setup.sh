#!/usr/bin/env bash
# Create a virtual environment (default: .venv) with equilibria installed for development.
#
# PyTorch is chosen before the project is installed so that pip never resolves `torch>=2.2`
# to a multi-GB CUDA build on a machine without a GPU:
#   1. a torch >= 2.2 already present in the environment is kept;
#   2. otherwise, on a machine without an NVIDIA GPU, a CPU build is installed: first from the
#      wheels pip can see without an index (a local wheel directory such as PIP_FIND_LINKS),
#      then from PyTorch's CPU index;
#   3. on a machine with an NVIDIA GPU, pip's default torch (a CUDA build) is installed.
# Usage: bash scripts/setup.sh [VENV_DIR] [EXTRAS]      (defaults: .venv dev)
set -euo pipefail
venv="${1:-.venv}"
extras="${2:-dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

has_torch() {
  "$py" - <<'PY' 2>/dev/null
import sys
import torch
major, minor = (int(p) for p in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 2) else 1)
PY
}

if has_torch; then
  echo "setup: keeping the installed torch"
elif command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing pip's default torch"
  "${pip[@]}" "torch>=2.2"
else
  echo "setup: no NVIDIA GPU, installing a CPU build of torch"
  "${pip[@]}" --no-index --no-deps "torch>=2.2" 2>/dev/null \
    || "${pip[@]}" "torch>=2.2" --index-url https://download.pytorch.org/whl/cpu
fi

"${pip[@]}" -e "$root[$extras]"
echo "setup: done. Run the tests with: $venv/bin/python -m pytest"
