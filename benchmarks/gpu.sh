#!/usr/bin/env bash
# The benchmark suite on a CUDA GPU, in one call of at most 5 minutes.
#
#   bash benchmarks/gpu.sh [OUT_DIR] [extra arguments for python -m benchmarks]
#
# Records the card (nvidia-smi) next to the report, then runs every part on the GPU under a
# 270 s limit: the quick preset by default, the full one with FULL=1. The report is rewritten
# after each part, so a run cut short still keeps the parts it finished. Set PYTHON to pick
# the interpreter (default: the project's .venv if present, else python3). TorchDEQ columns
# need torchdeq==0.1.0 in that interpreter (the `bench` extra); without it they are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-results/bench-cuda}"
shift || true
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out"
{
    echo "# GPU used for this report"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi not found"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
} | tee "$out/gpu.txt"
status=0
preset=(--quick)
if [[ "${FULL:-0}" == "1" ]]; then preset=(); fi
timeout 270 "$PYTHON" -m benchmarks --device cuda "${preset[@]}" --out "$out" "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "stopped at the 270 s limit; $out/report.md holds the parts that finished" >&2
fi
exit "$status"
