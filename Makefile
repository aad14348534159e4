# The README's two commands are `make demo` and `make test`; both run `make setup` first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The CPU build of torch, chosen explicitly (PyPI's Linux torch is the multi-GB CUDA build), from
# TORCH_INDEX_URL as an extra index: a copy pip already has (its cache, a find-links folder) still
# counts, and when the index cannot be reached the install relies on those alone (an offline
# machine with the wheel at hand). Override both for another build.
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test bench real-model clean gpu-setup gpu-test

setup: $(STAMP)
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -q shellcheck >/dev/null 2>&1; } || \
		echo "warning: shellcheck not installed (tests/slurm skips its check); install it with apt-get as root"

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_INDEX_URL)/torch/', timeout=15)" \
			>/dev/null 2>&1; then index="--extra-index-url $(TORCH_INDEX_URL)"; \
		else echo "note: $(TORCH_INDEX_URL) cannot be reached: $(TORCH_SPEC) must come from pip's cache or find-links"; \
		index=; fi; \
		echo "$(PIP) install $$index $(TORCH_SPEC)"; $(PIP) install --quiet $$index "$(TORCH_SPEC)"
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) -m recipes.demo

test: setup
	$(PY) -m pytest -q tests

# GPU smoke suite (tests/gpu, pytest marker `gpu`; README "Running on GPUs"). Inside an NGC PyTorch
# container (torch, megatron-core, Transformer Engine, apex already there) use its python:
#   make gpu-test GPU_PYTHON=python
# elsewhere it builds $(GPU_VENV) with PyPI's CUDA torch. Prints one PASS / FAIL / SKIP line per check.
GPU_VENV ?= .venv-gpu
GPU_PYTHON ?= $(GPU_VENV)/bin/python
GPU_TORCH_SPEC ?= torch==2.13.0
GPU_STAMP := build/gpu-setup.done

gpu-setup: $(GPU_STAMP)

$(GPU_STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	GPU_VENV=$(GPU_VENV) GPU_PYTHON=$(GPU_PYTHON) PYTHON=$(PYTHON) GPU_TORCH_SPEC="$(GPU_TORCH_SPEC)" \
		bash tests/gpu/setup_env.sh
	mkdir -p build && touch $(GPU_STAMP)

# Without an NVIDIA GPU nothing CUDA-sized is installed: the checks run in .venv and report SKIP.
gpu-test:
	@if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then \
		$(MAKE) --no-print-directory gpu-setup && \
		$(GPU_PYTHON) -m pytest -m gpu -q -p no:cacheprovider tests/gpu; \
	else \
		echo "gpu-test: no NVIDIA GPU here (nvidia-smi lists none): every check is reported as skipped"; \
		$(MAKE) --no-print-directory setup && $(PY) -m pytest -m gpu -q -p no:cacheprovider tests/gpu; \
	fi

# e2e_throughput: the quick setting (4 pairs, 256 tokens; README "Benchmarks" for the issue's full
# one); TRL_PYTHON=/path/to/python (an interpreter with trl, outside this project) adds TRL's DPOTrainer.
TRL_PYTHON ?=
bench: setup
	$(PY) -m benchmarks.step_overhead
	$(PY) -m benchmarks.attention
	$(PY) -m benchmarks.logprob_memory
	$(PY) -m benchmarks.e2e_throughput $(if $(TRL_PYTHON),--trl-python $(TRL_PYTHON))

# HF -> Megatron -> RE-DPO on noisy real pairs -> HF -> generate; tens of minutes on 2 cores, not in `test`.
real-model: setup
	$(PY) -m recipes.real_model $(ARGS)

clean:
	rm -rf $(VENV) $(GPU_VENV) build .pytest_cache .hypothesis
