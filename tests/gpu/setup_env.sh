#!/usr/bin/env bash
# `make gpu-setup`: prepare the Python that runs the GPU smoke suite (tests/gpu). Two cases:
#  - GPU_PYTHON is the interpreter of GPU_VENV (the default): create that venv with $PYTHON and
#    install PyPI's CUDA build of torch ($GPU_TORCH_SPEC) under constraints.txt;
#  - any other GPU_PYTHON (an NGC PyTorch container's `python`): keep the container's own torch,
#    Transformer Engine and apex; torch is pinned to the version the container ships.
# Either way triton comes with the CUDA torch (its version must match torch's; requirements.txt pins
# it only for the CPU install, which has none). Then our other requirements and the package itself,
# a check that torch really has CUDA, and the pin-consistency check (nemo_repo.model.versions).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${GPU_VENV:?}" "${GPU_PYTHON:?}" "${PYTHON:=python3.11}" "${GPU_TORCH_SPEC:=torch==2.13.0}"
mkdir -p build
grep -v -E '^(torch|triton)==' requirements.txt > build/gpu-requirements.txt
if [[ "$GPU_PYTHON" == "$GPU_VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found" >&2; exit 1; }
    [[ -x "$GPU_PYTHON" ]] || "$PYTHON" -m venv "$GPU_VENV"
    export PIP_CONSTRAINT="$PWD/constraints.txt"
    "$GPU_PYTHON" -m pip install --quiet "$GPU_TORCH_SPEC"
else
    # the container's torch stays: pin it; its PIP_CONSTRAINT (if any) is replaced by ours, as
    # megatron-core's install guide does for NGC containers
    "$GPU_PYTHON" -c 'import torch; print(f"torch=={torch.__version__}")' > build/gpu-constraints.txt
    export PIP_CONSTRAINT="$PWD/build/gpu-constraints.txt"
fi
"$GPU_PYTHON" - <<'PY'
import sys

import torch

if not torch.version.cuda:
    sys.exit(f"error: torch {torch.__version__} in {sys.executable} is a CPU build; a pip "
             "configuration (find-links, index) may have supplied it: set GPU_TORCH_SPEC / pip options")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}")
PY
"$GPU_PYTHON" -m pip install --quiet -r build/gpu-requirements.txt
"$GPU_PYTHON" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$GPU_PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e .
"$GPU_PYTHON" -m nemo_repo.model.versions
