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

.PHONY: help install doctor simulate level0 ct experiment repro mlflow-ui demo demo-level1 test test-unit \
        test-integration test-e2e test-fast lint format typecheck bench clean

# The state folder: every target works on the active profile's (configs/profiles/<name>.yaml
# state_dir; FRAUD_PROFILE__STATE_DIR overrides it, and so does `make <target> STATE_DIR=<folder>`).
# The one exception is DVC's stages, which always run on state/ (see `repro`).
ifeq ($(origin STATE_DIR),command line)
export FRAUD_PROFILE__STATE_DIR := $(abspath $(STATE_DIR))
STATE = $(FRAUD_PROFILE__STATE_DIR)
else
# (make's $(shell) sees the environment make started with, not its exports: hence the branch)
STATE = $(shell $(FRAUD) info --path)
endif
# The ports of the servers started here (make doctor checks that they are free):
# `make mlflow-ui MLFLOW_PORT=5001`, `make deploy PREFECT_PORT=4201`, `make serve SERVE_PORT=8001`.
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= $(or $(FRAUD_DEPLOY_PORT),4200)
SERVE_PORT ?= $(or $(FRAUD_SERVING__PORT),$(shell sed -n 's/^port: *\([0-9][0-9]*\).*/\1/p' configs/serving.yaml))
# The level-1 demo's state folder (empty: level1-demo inside the state folder).
DEMO_STATE_DIR ?=

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || { echo "uv not found: installing it with pip"; \
	  $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv; }
	@echo "Installing the locked environment into $(VENV) (uv sync --frozen)"
	@# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE (exported above) nothing is cached
	@# later, and every command (a no-op dvc repro included) would compile its imports anew.
	@$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

install: $(VENV)/.synced ## Create .venv from uv.lock (done automatically by every target)

doctor: ## Is this machine ready? Python, .venv, free ports, cores, disk: ok/warn/fail each; exit 1 on a fail
	@$(PYTHON) src/fraud_detection/doctor.py --root "$(CURDIR)" --port "MLflow UI=$(MLFLOW_PORT)=MLFLOW_PORT=mlflow-ui" \
	   --port "Prefect server=$(PREFECT_PORT)=PREFECT_PORT=deploy" --port "prediction API=$(SERVE_PORT)=SERVE_PORT=serve"

simulate: $(VENV)/.synced ## Simulate daily transaction partitions and delayed labels (configs/simulate.yaml)
	@$(FRAUD) simulate

level0: $(VENV)/.synced ## Level 0: run the manual notebook non-interactively; model + metrics in <state>/level0/
	@$(FRAUD) level0

ct: $(VENV)/.synced ## Level 1: run the continuous-training flow once (Prefect), on demand
	@$(FRAUD) ct run

experiment: $(VENV)/.synced ## Train and evaluate without the orchestrator; logged to MLflow, not registered
	@$(FRAUD) train

# DVC's stages are the exception to the state switch: dvc.yaml declares their outputs under
# state/ (DVC tracks outputs inside the repository only, and dvc.yaml cannot read the
# environment), and each stage's command says --state-dir state, so that dvc.lock means the
# same on every machine. tests/unit/test_dvc_state.py checks both.
repro: $(VENV)/.synced ## Reproduce the pipeline with DVC (dvc.yaml) on state/ (DVC's stages use no other state folder); a no-op when nothing changed
	@if [ "$(STATE)" != "$(CURDIR)/state" ]; then \
	   echo "note: DVC's stages run on $(CURDIR)/state (dvc.yaml), not on the profile's state folder $(STATE)"; fi
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

mlflow-ui: $(VENV)/.synced ## Open the MLflow UI on the state folder's tracking store (http://127.0.0.1:5000; MLFLOW_PORT=... for another port)
	@$(FRAUD) mlflow-ui --port $(MLFLOW_PORT)

demo: $(VENV)/.synced ## The main job: every maturity level in turn (level 2 leaves Prefect running: make stop)
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
	@echo; echo "== Level 1: continuous training, serving and monitoring, day by day =="
	@$(BIN)/python -m pipelines.level1_continuous_training.demo $(if $(DEMO_STATE_DIR),--state-dir "$(DEMO_STATE_DIR)")
	@echo; echo "== Level 2: the pipeline's own CI, then deployment to a Prefect server (a local one, or the stack's in the production profile) =="
	@echo "-- the checks every pull request runs first (ci.yml): lint, types, workflows, Dockerfile, prefect.yaml --"
	@$(MAKE) --no-print-directory lint typecheck lint-workflows lint-docker check-deployments
	@echo; echo "-- make deploy: Prefect server, work pool, prefect deploy --all, a worker, one deployed CT run --"
	@$(MAKE) --no-print-directory deploy
	@echo; echo "The Prefect worker (and the server make deploy started, if any) keep running so that you can look around; make stop ends them."

demo-level1: $(VENV)/.synced ## Level 1 only: play days one by one: CT on each new day, the service live, monitoring; runs table (in <state>/level1-demo, or DEMO_STATE_DIR)
	@$(BIN)/python -m pipelines.level1_continuous_training.demo $(if $(DEMO_STATE_DIR),--state-dir "$(DEMO_STATE_DIR)")

test: $(VENV)/.synced ## Run the whole test suite (unit, integration, e2e; `services` tests need make services)
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

# Every benchmark runs, then the target fails naming those with a goal not met (or a crash).
BENCHES := simulator validation value_skew feature_store ct serving production scaleout repro loadgen

bench: $(VENV)/.synced ## Benchmarks, each against a baseline in the same run; results in benchmarks/results/; exit 1 if a goal is not met
	@failed=""; for b in $(BENCHES); do \
	   echo "== benchmarks/bench_$$b.py"; $(BIN)/python benchmarks/bench_$$b.py || failed="$$failed $$b"; \
	 done; \
	 if [ -n "$$failed" ]; then \
	   echo "make bench: a goal not met (or the run failed) in:$$failed; verdicts in benchmarks/results/" >&2; exit 1; \
	 fi; echo "make bench: no goal reads 'not met' (inconclusive ones are in benchmarks/results/)"

.PHONY: bench-values
bench-values: $(VENV)/.synced ## Benchmark the raw gate with its value-skew stage on 1M-row days (results in benchmarks/results/)
	@$(BIN)/python benchmarks/bench_value_skew.py

clean: $(VENV)/.synced ## Delete the state folder (data, models, runs, reports) of the profile, or STATE_DIR=<folder>
	@$(FRAUD) clean

# ---- docs ----
.PHONY: figures

figures: $(VENV)/.synced ## Redraw the figures in docs/figures/ from the project's own functions
	@$(BIN)/python docs/figures/card_burst.py

# ---- services ----
# Tests marked `services` talk to a real Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (the production profile's services). They skip with a hint when one does
# not answer; with FRAUD_REQUIRE_SERVICES=1 (.ci/run, ci.yml) they fail instead.
.PHONY: services services-redis services-postgres
REDIS_PING := $(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_connect_timeout=2).ping()" 2>/dev/null
PG_PING := $(BIN)/python -c "import psycopg; psycopg.connect('host=127.0.0.1 port=5432 user=postgres dbname=postgres', connect_timeout=3).close()" 2>/dev/null
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

services: $(VENV)/.synced ## Make sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) answer for the services tests (starts them if needed)
	@$(MAKE) --no-print-directory services-redis services-postgres

services-redis: $(VENV)/.synced
	@if $(REDIS_PING); then echo "redis: answering on 127.0.0.1:6379"; exit 0; fi; \
	 if ! command -v redis-server >/dev/null; then \
	   command -v apt-get >/dev/null || { echo "error: no Redis on 127.0.0.1:6379 and no redis-server to start: install Redis and start it there" >&2; exit 2; }; \
	   echo "redis-server is not installed: installing it (apt-get install redis-server)"; \
	   $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends redis-server >/dev/null || exit 2; \
	   if $(REDIS_PING); then echo "redis: answering on 127.0.0.1:6379"; exit 0; fi; \
	 fi; \
	 redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null; \
	 for i in 1 2 3 4 5 6 7 8 9 10; do $(REDIS_PING) && { echo "redis: started redis-server on 127.0.0.1:6379"; exit 0; }; sleep 0.5; done; \
	 echo "error: redis-server did not answer on 127.0.0.1:6379" >&2; exit 2

services-postgres: $(VENV)/.synced
	@if $(PG_PING); then echo "postgres: answering on 127.0.0.1:5432"; exit 0; fi; \
	 if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
	   echo "postgres: starting the local cluster (pg_ctlcluster)"; \
	   $(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; \
	   for i in 1 2 3 4 5 6 7 8 9 10; do $(PG_PING) && { echo "postgres: answering on 127.0.0.1:5432"; exit 0; }; sleep 1; done; \
	 fi; \
	 echo "error: no PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth): start one there, e.g. apt-get install postgresql" >&2; exit 2

# ---- production stack ----
# The production profile (configs/profiles/production.yaml, docs/production.md) on real
# services: PostgreSQL and Redis at the profile's addresses (here 127.0.0.1:5432 and :6379).
.PHONY: prod-up prod-down prod-status test-services

prod-up: $(VENV)/.synced ## Production stack as local processes: databases + migrations, MLflow and Prefect servers on PostgreSQL, Dask; prints the addresses
	@FRAUD_PROFILE=production $(FRAUD) stack up

prod-down: $(VENV)/.synced ## Stop what make prod-up started
	@FRAUD_PROFILE=production $(FRAUD) stack down

prod-status: $(VENV)/.synced ## Which servers of the production stack are running
	@FRAUD_PROFILE=production $(FRAUD) stack status

# ci.yml's `services tests` job: PostgreSQL and Redis as service containers at those addresses.
test-services: $(VENV)/.synced ## Run the tests marked `services` (PostgreSQL, Redis); FRAUD_REQUIRE_SERVICES=1: a missing service fails
	@$(BIN)/pytest -m services $(PYTEST_ARGS)

# ---- serving ----
# The prediction API (docs/serving.md): FastAPI on the Feast online store, the champion
# hot-reloaded from the registry, every prediction logged under <state>/serving/predictions/.
.PHONY: serve

serve: $(VENV)/.synced ## Serve the champion: POST /predict on http://127.0.0.1:8000 (docs at /docs; SERVE_PORT=... for another port); Ctrl+C stops
	@$(FRAUD) serve --port $(SERVE_PORT)

# ---- serving: load test ----
# Locust, headless, against a running service (make serve in another shell): its users post
# the newest raw day's transactions back to back (loadtests/locustfile.py). The HTML report
# and the figures as JSON go to <state>/serving/loadtest/.
.PHONY: loadtest
LOAD_URL ?= http://127.0.0.1:$(SERVE_PORT)
LOAD_USERS ?= 16
LOAD_TIME ?= 30s

loadtest: $(VENV)/.synced ## Load-test a running service with Locust (LOAD_URL, LOAD_USERS=16, LOAD_TIME=30s); report in <state>/serving/loadtest/
	@$(BIN)/python -c "import socket, sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); socket.create_connection((p.hostname, p.port or 80), timeout=5)" "$(LOAD_URL)" 2>/dev/null || \
	 { echo "error: no service answers at $(LOAD_URL): start one first (make serve), or point LOAD_URL=... at it" >&2; exit 2; }
	@mkdir -p "$(STATE)/serving/loadtest"
	@echo "Locust: $(LOAD_USERS) users for $(LOAD_TIME) against $(LOAD_URL) (POST /predict)"
	@$(BIN)/locust -f loadtests/locustfile.py --host "$(LOAD_URL)" --headless -u $(LOAD_USERS) -r $(LOAD_USERS) \
	   -t $(LOAD_TIME) --only-summary --loglevel WARNING --html "$(STATE)/serving/loadtest/report.html" \
	   --json-file "$(STATE)/serving/loadtest/stats"
	@echo "report: $(STATE)/serving/loadtest/report.html (figures: $(STATE)/serving/loadtest/stats.json)"

# ---- serving: delivery checks ----
# Google's model-delivery checks for the champion (docs/serving.md): it loads and predicts its
# input example, the API answers, a short load test meets configs/serving.yaml delivery: budgets.
# Report in <state>/serving/delivery/v<N>.json; the version is tagged delivery_check=passed|failed.
.PHONY: delivery-check

delivery-check: $(VENV)/.synced ## Model delivery checks for the champion (starts the service itself); exit 1 on a failed budget
	@$(FRAUD) delivery-check

# ---- monitoring ----
# Batch scoring and monitoring (docs/monitoring.md): both run their Prefect flow, like `make ct`.
.PHONY: score monitor

score: $(VENV)/.synced ## Batch-score the newest accepted day with the champion (Prefect flow); scores in <state>/scores/
	@$(FRAUD) score --latest

monitor: $(VENV)/.synced ## Monitoring: drift, performance on delayed labels, HTML report (<state>/reports/monitoring/), signals to CT
	@$(FRAUD) monitor run

# ---- level 2: CI/CD ----
# What the GitHub Actions workflows run (.github/workflows/, docs/level2.md): every workflow
# step is one of these targets (or one above), so a red CI step reproduces locally with the
# same command. tests/unit/test_workflows.py keeps the workflows and this list in step.
.PHONY: lint-workflows lint-docker test-data test-notebook smoke repro-sample ct-new-data ct-ci \
        wheel image deps-fresh health-report

# A tiny simulated world: the whole CT pipeline on it takes about a minute.
SAMPLE_WORLD := --days 6 --rows-per-day 1500 --cards 300 --merchants 60 --label-delay-days 1
# The same world for DVC, whose `fraud simulate` stage reads configs/simulate.yaml: as
# environment overrides (FRAUD_SIMULATE__<KEY>).
SAMPLE_ENV := FRAUD_SIMULATE__DAYS=6 FRAUD_SIMULATE__ROWS_PER_DAY=1500 FRAUD_SIMULATE__CARDS=300 \
              FRAUD_SIMULATE__MERCHANTS=60 FRAUD_SIMULATE__LABEL_DELAY_DAYS=1
# The data-contract tests: the GX suites, the data gates, the gate keeping bad days out.
DATA_TESTS := tests/unit/test_validation_suites.py tests/integration/test_data_gate.py \
              tests/integration/test_gate_protects_features.py
PYTEST_ARGS ?=
# CT in CI (ct.yml): the state folder (cached between runs; default: the profile's), the
# world new days come from, the trigger (from the GitHub event) and extra `fraud ct run` flags.
CT_STATE_DIR ?= $(STATE)
CT_WORLD := --rows-per-day 5000 --cards 2500 --merchants 300 --label-delay-days 3
CT_FIRST_DAYS ?= 12
CT_TRIGGER ?= $(if $(filter schedule,$(GITHUB_EVENT_NAME)),schedule,$(if $(filter repository_dispatch,$(GITHUB_EVENT_NAME)),new_data,on_demand))
CT_ARGS ?=
SMOKE_DIR ?=
WHEEL_DIR ?= dist
IMAGE ?= fraud-detection-serving:dev
DEPS_DRY_RUN ?=

lint-workflows: $(VENV)/.synced ## Lint the GitHub Actions workflows (actionlint)
	@$(BIN)/actionlint -color=false && echo "actionlint: $(words $(wildcard .github/workflows/*.yml)) workflows clean"

lint-docker: $(VENV)/.synced ## Lint the serving Dockerfile (hadolint)
	@$(BIN)/hadolint Dockerfile && echo "hadolint: Dockerfile clean"

test-data: $(VENV)/.synced ## Data tests: suite files up to date, then the data-contract tests (GX gates)
	@$(FRAUD) validate write-suites --check
	@$(BIN)/pytest $(DATA_TESTS) $(PYTEST_ARGS)

test-notebook: $(VENV)/.synced ## Execute the level-0 notebook headless on a small sample (its e2e test)
	@$(BIN)/pytest tests/e2e/test_level0_notebook.py $(PYTEST_ARGS)

smoke: $(VENV)/.synced ## Smoke test: the whole CT pipeline on a tiny simulated set; throwaway state, Prefect, MLflow
	@dir="$(SMOKE_DIR)"; if [ -z "$$dir" ]; then dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; fi; \
	 echo "smoke test in $$dir (throwaway: its own temporary Prefect server and SQLite MLflow)"; \
	 $(FRAUD) simulate --state-dir "$$dir" $(SAMPLE_WORLD) && \
	 env -u PREFECT_API_URL -u PREFECT_API_KEY FRAUD_PROFILE=local \
	   FRAUD_PROFILE__STATE_DIR="$$dir" PREFECT_HOME="$$dir/prefect" \
	   $(MAKE) --no-print-directory ct-ci CT_STATE_DIR="$$dir" CT_TRIGGER=on_demand

repro-sample: $(VENV)/.synced ## DVC: `dvc repro` of every stage on a small sample, in a throwaway copy of the repository
	@copy=$$(mktemp -d); trap 'rm -rf "$$copy"' EXIT; \
	 echo "dvc repro on a sample in a throwaway copy: $$copy"; \
	 tar -c --exclude=./.venv --exclude=./state --exclude=./.git --exclude=./.env \
	   --exclude=./.dvc/cache --exclude=./.dvc/tmp --exclude=./dist \
	   --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude='__pycache__' . | tar -x -C "$$copy" && \
	 cd "$$copy" && git init -q && \
	 env -u FRAUD_PROJECT_DIR -u FRAUD_PROFILE__STATE_DIR -u PREFECT_API_URL FRAUD_PROFILE=local \
	   $(SAMPLE_ENV) DVC_SITE_CACHE_DIR="$$copy/state/dvc-site-cache" PATH="$(CURDIR)/$(BIN):$$PATH" \
	   sh -c 'dvc repro && dvc status && dvc metrics show'

ct-new-data: $(VENV)/.synced ## CT in CI: the next simulated day lands in CT_STATE_DIR (stands in for a real feed)
	@days=$$(ls -d "$(CT_STATE_DIR)"/data/raw/date=* 2>/dev/null | wc -l); \
	 next=$$(( days > 0 ? days + 1 : $(CT_FIRST_DAYS) )); \
	 echo "$$days day(s) in $(CT_STATE_DIR): simulating up to day $$next"; \
	 $(FRAUD) simulate --state-dir "$(CT_STATE_DIR)" --days $$next $(CT_WORLD)

ct-ci: $(VENV)/.synced ## CT in CI: one CT run, the runs table to $GITHUB_STEP_SUMMARY; exit 1 if a gate said no
	@status=0; \
	 $(FRAUD) ct run --trigger $(CT_TRIGGER) --fail-on-gate --state-dir "$(CT_STATE_DIR)" $(CT_ARGS) || status=$$?; \
	 $(FRAUD) ct history --state-dir "$(CT_STATE_DIR)" --last 10; \
	 if [ -n "$$GITHUB_STEP_SUMMARY" ]; then \
	   { echo "### Continuous training ($(CT_TRIGGER)): $$([ $$status = 0 ] && echo passed || echo FAILED)"; \
	     echo; $(FRAUD) ct history --state-dir "$(CT_STATE_DIR)" --last 10 --markdown; } >> "$$GITHUB_STEP_SUMMARY"; \
	   echo "runs table written to the job summary ($$GITHUB_STEP_SUMMARY)"; \
	 fi; \
	 exit $$status

# The health report reads CT_STATE_DIR (health-report.yml restores ct.yml's cached state
# there). On Actions (GITHUB_TOKEN and GITHUB_REPOSITORY set) the last CI results come
# from GitHub's API (the newest runs on main); elsewhere the report says they are absent.
HEALTH_ARGS ?=

health-report: $(VENV)/.synced ## Pipeline health of CT_STATE_DIR (CT, gates, champion, serving, CI): reports/health.html, Markdown to $GITHUB_STEP_SUMMARY; then the audit log
	@ci=""; runs="$(CT_STATE_DIR)/reports/ci-runs.json"; \
	 if [ -n "$$GITHUB_TOKEN" ] && [ -n "$$GITHUB_REPOSITORY" ]; then \
	   mkdir -p "$(CT_STATE_DIR)/reports"; \
	   if curl -fsS --max-time 30 -H "Authorization: Bearer $$GITHUB_TOKEN" \
	        -H "Accept: application/vnd.github+json" -o "$$runs" \
	        "$${GITHUB_API_URL:-https://api.github.com}/repos/$$GITHUB_REPOSITORY/actions/runs?branch=main&per_page=50"; \
	   then ci="--ci-results $$runs"; \
	   else echo "warning: the last CI results could not be read from GitHub's API; the report goes without them"; fi; \
	 fi; \
	 $(FRAUD) health-report --state-dir "$(CT_STATE_DIR)" $$ci $(HEALTH_ARGS) && \
	 $(FRAUD) audit --state-dir "$(CT_STATE_DIR)"

wheel: $(VENV)/.synced ## Build the package wheel into dist/ (uv build)
	@$(UV) build --wheel --out-dir "$(WHEEL_DIR)" --quiet && ls "$(WHEEL_DIR)"/*.whl

image: ## Build the serving container image (docker build); needs a running Docker daemon
	@command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || \
	 { echo "error: no Docker daemon answers (docker info failed): start Docker, or let cd.yml build the image" >&2; exit 2; }
	docker build --tag "$(IMAGE)" .

deps-fresh: $(VENV)/.synced ## Re-resolve uv.lock with the newest allowed releases, then lint, type-check and test (DEPS_DRY_RUN=1: only show)
	@if [ -n "$(DEPS_DRY_RUN)" ]; then $(UV) lock --upgrade --dry-run; exit $$?; fi; \
	 $(UV) lock --upgrade && $(UV) sync --locked --quiet && touch $(VENV)/.synced && \
	 { git --no-pager diff --stat -- uv.lock || true; } && \
	 $(MAKE) --no-print-directory lint typecheck test

# ---- level 2: shift-left security ----
# Security checks on every pull request (ci.yml job `security`; docs/level2.md, "Shift-left
# security"). `make security` runs the ones that work offline. pip-audit needs the network
# and the image smoke test a Docker daemon: where they are missing, each stops with one line
# (exit 2), like `make image`.
.PHONY: security lint-security secrets secrets-baseline audit sbom image-smoke

# The SBOM lists uv.lock's runtime packages as exported by uv (a requirements file holds no
# dependency graph, which cyclonedx-py warns about: that warning is silenced).
SBOM ?= dist/sbom.cdx.json
# pip-audit asks OSV (api.osv.dev) about every package in uv.lock; a probe first, so that
# without the network it says so in seconds instead of timing out package by package.
AUDIT_SERVICE_URL ?= https://api.osv.dev/v1/query
AUDIT_TIMEOUT ?= 5
# Advisories judged not to apply: --ignore-vuln ID, each with a dated comment saying why.
AUDIT_ARGS ?=
IMAGE_SMOKE_PORT ?= 18080
# The key the smoke test starts the container with: a throwaway, not a secret.
IMAGE_SMOKE_KEY ?= image-smoke-throwaway-key
# What the secret scan skips: lock files (package hashes: high entropy, not secrets) and the
# API key's header name (a name, not a key).
SECRETS_EXCLUDE := --exclude-files '^(uv\.lock|dvc\.lock)$$' --exclude-secrets '^X-API-Key$$'

security: $(VENV)/.synced ## Every offline security check: ruff's S rules, the secret scan, hadolint, the SBOM
	@$(MAKE) --no-print-directory lint-security secrets lint-docker sbom

lint-security: $(VENV)/.synced ## ruff's flake8-bandit rules (S): shell, subprocess, pickle, SQL, temp files, asserts in src/
	@$(BIN)/ruff check --select S --quiet . && echo "ruff S (flake8-bandit): clean"

secrets: $(VENV)/.synced ## Secret scan (detect-secrets) of the tracked files against .secrets.baseline; fails on a new or unaudited secret
	@git ls-files -z | xargs -0 $(BIN)/detect-secrets-hook --baseline .secrets.baseline && \
	 $(BIN)/python -c "import json, sys; left = sorted({p for p, found in json.load(open(sys.argv[1]))['results'].items() for s in found if s.get('is_secret') is not False}); sys.exit(f'error: {sys.argv[1]} holds findings not audited as false positives, in {left}: remove them, or audit them (.venv/bin/detect-secrets audit {sys.argv[1]})' if left else 0)" .secrets.baseline && \
	 echo "detect-secrets: no secret in $$(git ls-files | wc -l) tracked files beyond .secrets.baseline (all audited)"

secrets-baseline: $(VENV)/.synced ## Re-scan into .secrets.baseline (audit marks kept); then `.venv/bin/detect-secrets audit .secrets.baseline`
	@$(BIN)/detect-secrets scan --baseline .secrets.baseline $(SECRETS_EXCLUDE) && \
	 echo "updated .secrets.baseline: audit new entries with .venv/bin/detect-secrets audit .secrets.baseline"

audit: $(VENV)/.synced ## pip-audit: known vulnerabilities (OSV) of every package in uv.lock; needs the network (one line, exit 2, without)
	@timeout $$(( 2 * $(AUDIT_TIMEOUT) )) $(BIN)/python -c "import sys, httpx; httpx.head(sys.argv[1], timeout=float(sys.argv[2]))" \
	   "$(AUDIT_SERVICE_URL)" "$(AUDIT_TIMEOUT)" >/dev/null 2>&1 || \
	 { echo "error: pip-audit needs the network: $(AUDIT_SERVICE_URL) did not answer within $(AUDIT_TIMEOUT) s (ci.yml runs it on GitHub's runners)" >&2; exit 2; }
	@reqs=$$(mktemp); trap 'rm -f "$$reqs"' EXIT; \
	 $(UV) export --frozen --all-groups --no-emit-project --format requirements-txt --quiet --output-file "$$reqs" && \
	 $(BIN)/pip-audit --requirement "$$reqs" --no-deps --disable-pip --vulnerability-service osv \
	   --progress-spinner off --strict $(AUDIT_ARGS)

sbom: $(VENV)/.synced ## CycloneDX SBOM of the locked runtime environment (uv.lock without the dev and test groups) into dist/sbom.cdx.json
	@mkdir -p "$(dir $(SBOM))"; reqs=$$(mktemp); trap 'rm -f "$$reqs"' EXIT; \
	 $(UV) export --frozen --no-default-groups --no-emit-project --format requirements-txt --quiet --output-file "$$reqs" && \
	 PYTHONWARNINGS=ignore::UserWarning $(BIN)/cyclonedx-py requirements "$$reqs" --pyproject pyproject.toml --output-reproducible \
	   --output-format JSON --output-file "$(SBOM)" && \
	 echo "SBOM: $(SBOM) (CycloneDX, $$(grep -c '^[a-z]' "$$reqs") packages of uv.lock's runtime environment)"

image-smoke: ## Serving image on an empty state: refuses to start without FRAUD_API_KEY; with it, /health 200, /ready 503 "no model loaded", /predict 401 without the key (needs Docker)
	@command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || \
	 { echo "error: no Docker daemon answers (docker info failed): start Docker, or let ci.yml run the image smoke test" >&2; exit 2; }
	@$(MAKE) --no-print-directory image
	@name="fraud-image-smoke-$$$$"; base="http://127.0.0.1:$(IMAGE_SMOKE_PORT)"; body=$$(mktemp); \
	 trap 'docker rm --force --volumes "$$name" "$$name-nokey" >/dev/null 2>&1; rm -f "$$body"' EXIT; \
	 status=0; timeout 60 docker run --name "$$name-nokey" "$(IMAGE)" >"$$body" 2>&1 || status=$$?; \
	 if [ $$status = 0 ] || [ $$status = 124 ]; then \
	   echo "error: the image started without FRAUD_API_KEY (exit $$status): it must refuse" >&2; exit 1; fi; \
	 echo "image-smoke: without FRAUD_API_KEY it refused to start (exit $$status): $$(tail -n 1 "$$body")"; \
	 docker run --detach --name "$$name" --env FRAUD_API_KEY="$(IMAGE_SMOKE_KEY)" \
	   --publish "127.0.0.1:$(IMAGE_SMOKE_PORT):8000" "$(IMAGE)" >/dev/null || exit 1; \
	 for i in $$(seq 90); do curl --silent --fail --output /dev/null "$$base/health" && break; sleep 1; done; \
	 code=$$(curl --silent --output "$$body" --write-out '%{http_code}' "$$base/health"); \
	 [ "$$code" = 200 ] || { echo "error: GET /health answered $$code, not 200" >&2; docker logs "$$name" >&2; exit 1; }; \
	 code=$$(curl --silent --output "$$body" --write-out '%{http_code}' "$$base/ready"); \
	 if [ "$$code" != 503 ] || ! grep -q "no model loaded" "$$body"; then \
	   echo "error: GET /ready on an empty state answered $$code $$(cat "$$body"), not 503 naming no model loaded" >&2; \
	   docker logs "$$name" >&2; exit 1; fi; \
	 echo "image-smoke: /health 200; /ready 503 on an empty state: $$(cat "$$body")"; \
	 code=$$(curl --silent --output "$$body" --write-out '%{http_code}' --request POST \
	   --header 'content-type: application/json' --data '{}' "$$base/predict"); \
	 [ "$$code" = 401 ] || { echo "error: POST /predict without the API key answered $$code, not 401" >&2; exit 1; }; \
	 echo "image-smoke: POST /predict without the API key 401; $(IMAGE) passed"

# ---- level 2: deployments ----
# The level-1 flows as Prefect deployments (prefect.yaml, docs/deploy.md). Logs and the
# recorded process ids live in <state>/deploy/; PREFECT_PORT (or FRAUD_DEPLOY_PORT) picks
# another port than 4200 for the local server.
.PHONY: deploy stop deploy-status deploy-prefect check-deployments

PREFECT_FILE ?= prefect.yaml
DEPLOY_CLI := FRAUD_DEPLOY_PORT=$(PREFECT_PORT) $(BIN)/python -m pipelines.level2_cicd.deploy

deploy: $(VENV)/.synced ## Level 2: local Prefect server (PREFECT_PORT=...), work pool, prefect deploy --all, a worker, one deployed CT run
	@$(DEPLOY_CLI) up --prefect-file $(PREFECT_FILE)

stop: $(VENV)/.synced ## Stop the Prefect server and worker that `make deploy` started (by recorded pids)
	@$(DEPLOY_CLI) down

deploy-status: $(VENV)/.synced ## Prefect server health, deployments, workers polling, Late runs
	@$(DEPLOY_CLI) status --prefect-file $(PREFECT_FILE)

deploy-prefect: $(VENV)/.synced ## CD: work pool + prefect deploy --all on PREFECT_API_URL (and PREFECT_API_KEY) from the environment
	@$(DEPLOY_CLI) remote --prefect-file $(PREFECT_FILE)

check-deployments: $(VENV)/.synced ## Validate prefect.yaml without a server: entrypoints, parameters, schedules
	@$(DEPLOY_CLI) check --prefect-file $(PREFECT_FILE)

include labs.mk
