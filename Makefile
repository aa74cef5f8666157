# Account Health. `make help` lists the targets. Everything runs from a virtualenv in .venv
# that the first target needing it creates, so a machine with only Python 3.11+ is enough.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
PEER := .venv-peer
PEER_STAMP := $(PEER)/.installed-$(shell cksum < bench/peer-requirements.txt | cut -d' ' -f1)

.PHONY: help install run test test-unit lint fmt migrate schemas bench-ingest bench-scorer bench-import bench-api bench-console bench-quality bench-scale bench-peer bench-backtest backtest-demo chaos soak clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,modelling]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install the project with its pinned dependencies

run: $(STAMP) ## run everything locally: broker, PostgreSQL, services, simulator (Ctrl-C stops)
	$(BIN)/healthscore dev

test: $(STAMP) ## run every test (unit + integration against a real broker and PostgreSQL)
	scripts/ensure-tools.sh
	$(BIN)/pytest

test-unit: $(STAMP) ## run the fast unit tests of the pure core only
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff (lint + format check) and mypy on services/ and shared/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check healthscore services shared
	$(BIN)/mypy

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format healthscore services shared
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## apply database migrations to the configured database
	$(BIN)/healthscore migrate

schemas: $(STAMP) ## regenerate docs/schemas/*.json and docs/openapi.json from the code
	$(BIN)/healthscore schemas --out docs/schemas
	$(BIN)/healthscore openapi --out docs/openapi.json

bench-ingest: $(STAMP) ## ingest throughput vs raw produce (bench/ingest.py)
	$(BIN)/python bench/ingest.py

bench-scorer: $(STAMP) ## scorer durable throughput vs raw consume, freshness, RSS (bench/scorer.py)
	$(BIN)/python bench/scorer.py

bench-quality: $(STAMP) ## one live model quality measurement vs one read of the history (bench/quality.py)
	$(BIN)/python bench/quality.py

bench-import: $(STAMP) ## history import of 20,000 accounts and 500,000 events (bench/import_history.py)
	$(BIN)/python bench/import_history.py

bench-api: $(STAMP) ## GET .../health vs a bare FastAPI endpoint under wrk (bench/api.py)
	@command -v wrk >/dev/null || { echo "bench-api needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python bench/api.py

bench-console: $(STAMP) ## console pages under wrk at 10,000 accounts vs a bare FastAPI endpoint (bench/console.py)
	@command -v wrk >/dev/null || { echo "bench-console needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python bench/console.py

bench-scale: $(STAMP) ## 1,000,000 accounts: catch-up with cache misses, model switch, API, bytes per account (bench/scale.py)
	@command -v wrk >/dev/null || { echo "bench-scale needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python bench/scale.py

$(PEER_STAMP): bench/peer-requirements.txt
	@test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install --quiet -r bench/peer-requirements.txt
	@rm -f $(PEER)/.installed-* && touch $@

bench-peer: $(STAMP) $(PEER_STAMP) ## the scorer vs Quix Streams on the same signals, hot and cold (bench/peer.py)
	$(BIN)/python bench/peer.py

bench-backtest: $(STAMP) ## back-test speed: 25,000 accounts, 100,000 events, lead time included (bench/backtest_speed.py)
	$(BIN)/python bench/backtest_speed.py

backtest-demo: $(STAMP) ## simulate 5,000 accounts with churn, fit a model, back-test both (bench/backtest_demo.py)
	$(BIN)/python bench/backtest_demo.py

chaos: $(STAMP) ## full reliability suite: 200k events, 20 kills each, 10k hostile records (reports/reliability.md)
	RELIABILITY_SCALE=full $(BIN)/pytest tests/reliability --timeout 3600 -p no:cacheprovider

soak: $(STAMP) ## steady traffic for SOAK_MINUTES (default 30); RSS and lag every minute (bench/soak.py)
	$(BIN)/python bench/soak.py

clean: ## remove the virtualenv, local data and caches
	rm -rf $(VENV) $(PEER) .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
