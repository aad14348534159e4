# The README's two commands are `make demo` and `make test`; both run `make setup` first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench real-model clean

setup: $(STAMP)
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -q shellcheck >/dev/null 2>&1; } || \
		echo "warning: shellcheck not installed (tests/slurm skips its check); install it with apt-get as root"

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) -m recipes.demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.step_overhead
	$(PY) -m benchmarks.attention
	$(PY) -m benchmarks.logprob_memory

# HF -> Megatron -> RE-DPO on noisy real pairs -> HF -> generate; tens of minutes on 2 cores, not in `test`.
real-model: setup
	$(PY) -m recipes.real_model $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
