# Every target installs into .venv first when it is missing or older than the
# dependency files. The CPU install is pinned by constraints-cpu.txt (torch==2.13.0,
# the CPU build): it never pulls CUDA wheels.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= verl,notebooks,test,dev
PYTEST_ARGS ?=

.PHONY: setup setup-gpu demo test test-slow test-all lint format bench clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

# GPU nodes (CUDA 12.8): torch comes with vllm; flash-attn builds without isolation.
setup-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install 'vllm==0.11.0' --extra-index-url https://download.pytorch.org/whl/cu128
	$(PY) -m pip install --no-build-isolation -e '.[verl,gpu,notebooks,test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) bench/bench_core.py --prompts 17000

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
