# Housecall: `make demo` runs it, `make test` tests it. `make help` lists everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HC := $(VENV)/bin/housecall
STAMP := $(VENV)/.installed
ASSETS := src/housecall/web/static/vendor/htmx.min.js
export HOUSECALL_DATABASE_URL ?= sqlite:///var/housecall.db
# Test processes for `make test` (pytest-xdist; decision 0030). TEST_WORKERS=0 runs the suite in one.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install bytecode demo serve test lint format migrate bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

# Front-end assets come from the npm registry at the versions package-lock.json pins; the page
# script is copied under static/ (served by Housecall itself, no CDN); axe-core stays in
# node_modules for the accessibility tests.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(ASSETS): node_modules/.installed
	mkdir -p $(dir $(ASSETS))
	cp node_modules/htmx.org/dist/htmx.min.js $(ASSETS)

install: $(STAMP) $(ASSETS) bytecode ## create .venv and install Housecall with test and dev tools (pinned)

# The editable install leaves src/ uncompiled, and where PYTHONDONTWRITEBYTECODE is set every
# process (each server a test starts, each `housecall import`) would compile every module again
# (~0.5 s). Compiling here writes __pycache__ anyway; it takes a moment when nothing changed.
bytecode: $(STAMP)
	@$(PY) -m compileall -q src > /dev/null

demo: $(STAMP) $(ASSETS) bytecode ## migrate an SQLite database under var/, load the demo organization, serve on :8000
	$(HC) demo --host 127.0.0.1 --port 8000

serve: $(STAMP) $(ASSETS) bytecode ## serve the configured database (HOUSECALL_DATABASE_URL) on :8000
	$(HC) serve --host 127.0.0.1 --port 8000

migrate: $(STAMP) bytecode ## apply the migrations to the configured database
	$(HC) migrate

test: $(STAMP) $(ASSETS) bytecode ## run the whole suite on SQLite and PostgreSQL (starts PostgreSQL if needed)
	./scripts/services.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/ruff format --check src tests tools bench
	$(VENV)/bin/mypy src

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format src tests tools bench
	$(VENV)/bin/ruff check --fix src tests tools bench

bench: $(STAMP) bytecode ## run the benchmarks in bench/ (see bench/README.md)
	./scripts/services.sh
	$(PY) bench/run_all.py

clean: ## remove the virtual environment and local databases
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache node_modules src/housecall/web/static/vendor
