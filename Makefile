# Two entry points do all set-up on a fresh machine (see README): `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ../shared/data
export TOOLRL_DATA_DIR ?= $(abspath $(DATA_DIR))
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
PYTEST_ARGS ?=

.PHONY: setup demo eval-demo test test-fast test-slow docs-config bench

setup:
	@bash scripts/setup.sh

# The main job on the embedded default model: a short real GRPO training run on CPU with code execution.
demo: setup
	$(VENV)/bin/toolrl train

# A quick look at evaluation: the embedded model on three AIME 2024 problems with a code interpreter.
eval-demo: setup
	$(VENV)/bin/toolrl eval --bench aime24 --limit 3

# Fast unit tests first (seconds), then the slow end-to-end suite (real models, engines, sandboxes).
test: setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

docs-config: setup
	$(PY) -m toolrl.config.reference > docs/configuration-keys.md
