#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, install the `gpu` extra into the current
# environment (when CuPy is missing), then run benchmarks/gpu_check.py: the GPU tests, the
# forward/gradient benchmarks against the cuFFT floor, one 2-rank reduction (NCCL with two
# GPUs, host staging with one) and one 2-rank reconstruction with a distributed object,
# written to benchmarks/results/gpu_check.json (under 10 min).
# Without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --repeats 3]
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). Offline
# machines: pip honours PIP_FIND_LINKS / PIP_NO_INDEX for a local CuPy wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    echo "gpu_check: no GPU (nvidia-smi found no NVIDIA device): nothing to check"
    exit 0
fi
nvidia-smi -L

if ! "$PY" -c "import cupy" >/dev/null 2>&1; then
    # the `gpu` extra's requirements, as pyproject.toml lists them
    mapfile -t reqs < <("$PY" -c 'import tomllib
for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]:
    print(r)')
    echo "gpu_check: installing the gpu extra: ${reqs[*]}"
    "$PY" -m pip install --quiet "${reqs[@]}"
fi

exec timeout 540 "$PY" benchmarks/gpu_check.py "$@"
