# Two commands on a fresh machine: `make pipeline` and `make test`. Everything else is set up here.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SETUP_LOG := .run/setup.log
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help setup pipeline test test-fast stop status bench clean serve

help:
	@echo "make pipeline   set up what is missing, start Prefect + MLflow on 127.0.0.1, run the full-pipeline deployment"
	@echo "make test       set up what is missing, run the test suite"
	@echo "make stop       stop the Prefect and MLflow servers that make pipeline left running"
	@echo "make status     are the servers up?"
	@echo "make bench      run the benchmarks in bench/ (JSON in bench/results/)"
	@echo "make serve      bentoml serve the Bento that make pipeline built (http://127.0.0.1:3000)"

# torch first, pinned to the local CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@mkdir -p .run
	@echo "[setup] installing into $(VENV): torch==2.13.0, then the project (a few minutes; log: $(SETUP_LOG))"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --upgrade pip >>$(SETUP_LOG) 2>&1 || { tail -30 $(SETUP_LOG); exit 1; }
	@$(PY) -m pip install torch==2.13.0 >>$(SETUP_LOG) 2>&1 || { tail -30 $(SETUP_LOG); exit 1; }
	@$(PY) -m pip install -e '.[dev]' >>$(SETUP_LOG) 2>&1 || { tail -30 $(SETUP_LOG); exit 1; }
	@touch $@
	@echo "[setup] done"

# Debian's chromium for the page's browser test (headless; Playwright drives it, never downloads one).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@mkdir -p .run; if [ "$$(id -u)" = 0 ]; then echo "[setup] installing Debian's chromium (browser test of the service page)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >>$(SETUP_LOG) 2>&1 \
	  || { tail -20 $(SETUP_LOG); exit 1; }; \
	else echo "[setup] not root: install chromium yourself (sudo apt-get install -y chromium) for the page test"; fi

setup: $(STAMP)

pipeline: setup
	@$(PY) -m flows.run_pipeline

test: setup $(CHROMIUM)
	@$(PY) -m pytest

test-fast: setup
	@$(PY) -m pytest -m "not integration"

stop:
	@if [ -x $(PY) ]; then $(PY) -m flows.servers stop; else echo "nothing to stop"; fi

status: setup
	@$(PY) -m flows.servers status

bench: setup
	@$(PY) -m bench.bench_codec
	@$(PY) -m bench.bench_synth
	@$(PY) -m bench.bench_train
	@$(PY) -m bench.bench_session
	@$(PY) -m bench.bench_evaluate
	@$(PY) -m bench.bench_service

serve: setup
	@test -f reports/package.json || { echo "no reports/package.json: run make pipeline first"; exit 1; }
	@$(VENV)/bin/bentoml serve $$($(PY) -c 'import json; print(json.load(open("reports/package.json"))["bento_tag"])')

clean: stop
	rm -rf .run data checkpoints metrics reports mlflow.db mlartifacts
