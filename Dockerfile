# GPU image for nemo-repo: an NGC PyTorch container (torch with CUDA, NCCL, Transformer Engine,
# apex) plus our pinned requirements. See README, "Running on GPUs".
#   docker build -t nemo-repo:gpu .                       # or --build-arg NGC_TAG=<yy.mm>-py3
#   enroot import -o nemo-repo-gpu.sqsh dockerd://nemo-repo:gpu   # for Slurm (pyxis)
# The build fails unless the image's stack fits our pins (python -m nemo_repo.model.versions):
# torch >= 2.6, megatron-core 0.16.1, megatron-bridge 0.3.1, Transformer Engine >= 2.10 and < 2.12.
ARG NGC_TAG=26.01-py3
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}

WORKDIR /opt/nemo-repo
# Dependencies first (a layer that changes only with the pins), then the code.
COPY requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml README.md ./
COPY tests/gpu/setup_env.sh tests/gpu/setup_env.sh
COPY nemo_repo nemo_repo
COPY recipes recipes
RUN GPU_VENV=/nonexistent GPU_PYTHON=python bash tests/gpu/setup_env.sh
COPY . .

ENV CUDA_DEVICE_MAX_CONNECTIONS=1 \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1
