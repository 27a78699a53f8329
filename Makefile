# The one task runner: people, CI workflows and DVC stages call these targets.
# `make help` lists them. Every target bootstraps the locked environment first
# (installing uv with pip if it is absent), so a fresh clone needs only Python 3.11+.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
FRAUD := $(BIN)/fraud

# Quiet, offline-friendly tool settings (no telemetry; DVC's site cache inside the repo).
export FEAST_USAGE := False
export GX_ANALYTICS_ENABLED := False
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/state/dvc-site-cache
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install simulate level0 ct experiment repro mlflow-ui demo demo-level1 test test-unit \
        test-integration test-e2e test-fast lint format typecheck bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || { echo "uv not found: installing it with pip"; \
	  $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv; }
	@echo "Installing the locked environment into $(VENV) (uv sync --frozen)"
	@$(UV) sync --frozen --quiet
	@touch $@

install: $(VENV)/.synced ## Create .venv from uv.lock (done automatically by every target)

simulate: $(VENV)/.synced ## Simulate daily transaction partitions and delayed labels (configs/simulate.yaml)
	@$(FRAUD) simulate

level0: $(VENV)/.synced ## Level 0: run the manual notebook non-interactively; model + metrics in state/level0/
	@$(FRAUD) level0

ct: $(VENV)/.synced ## Level 1: run the continuous-training flow once (Prefect), on demand
	@$(FRAUD) ct run

experiment: $(VENV)/.synced ## Train and evaluate without the orchestrator; logged to MLflow, not registered
	@$(FRAUD) train

repro: $(VENV)/.synced ## Reproduce the pipeline with DVC (dvc.yaml); a no-op when nothing changed
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

mlflow-ui: $(VENV)/.synced ## Open the MLflow UI on the local tracking store (http://127.0.0.1:5000)
	@$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/state/mlflow/mlflow.db" --host 127.0.0.1 --port 5000

demo: $(VENV)/.synced ## The main job: simulate data, then run every maturity level in turn
	@echo "== Level 0: the manual notebook =="
	@$(FRAUD) simulate
	@$(FRAUD) level0
	@echo; echo "== Level 1: data validation and the feature store =="
	@$(FRAUD) validate raw --new
	@$(FRAUD) features build
	@$(FRAUD) features materialize
	@$(FRAUD) features online --card-id 7 --merchant-id 3
	@echo; echo "-- a new day arrives from a broken feed (duplicated transaction ids) --"
	@$(FRAUD) simulate --days 15 --scenario broken_feed --broken-day 14 --corruption duplicate_ids > /dev/null
	@$(FRAUD) validate raw --new || echo "(the data gate stopped it: exit code 1, as a failed gate should)"
	@$(FRAUD) features build
	@echo; echo "== Level 1: continuous training, day by day =="
	@$(BIN)/python -m pipelines.level1_continuous_training.demo

demo-level1: $(VENV)/.synced ## Level 1 only: play days one by one; CT on each new day; print the runs table
	@$(BIN)/python -m pipelines.level1_continuous_training.demo

test: $(VENV)/.synced ## Run the whole test suite (unit, integration, e2e)
	@$(BIN)/pytest

test-fast: $(VENV)/.synced ## Run the tests not marked slow
	@$(BIN)/pytest -m "not slow"

test-unit: $(VENV)/.synced ## Run the unit tests
	@$(BIN)/pytest -m unit

test-integration: $(VENV)/.synced ## Run the integration tests
	@$(BIN)/pytest -m integration

test-e2e: $(VENV)/.synced ## Run the end-to-end tests (notebook, pipelines)
	@$(BIN)/pytest -m e2e

lint: $(VENV)/.synced ## Lint and check formatting (ruff)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

format: $(VENV)/.synced ## Format the code and apply safe lint fixes (ruff)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

typecheck: $(VENV)/.synced ## Type-check src/ (mypy)
	@$(BIN)/mypy

bench: $(VENV)/.synced ## Benchmarks, each against a baseline in the same run; results in benchmarks/results/
	@$(BIN)/python benchmarks/bench_simulator.py
	@$(BIN)/python benchmarks/bench_validation.py
	@$(BIN)/python benchmarks/bench_feature_store.py
	@$(BIN)/python benchmarks/bench_ct.py

clean: ## Delete all local state (data, models, runs): rm -rf state
	rm -rf state
