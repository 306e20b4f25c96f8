# pushpop: `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PEERS_STAMP := $(VENV)/.peers-installed

.PHONY: help venv demo test lint format snapshot bench bench-peers bench-citus citus clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -e '.[dev,embedded,binary]'
	touch $@

venv: $(STAMP) ## create .venv and install pushpop with its dev tools

demo: $(STAMP) ## run example/main.py against a database (an embedded one if none answers)
	$(PYTHON) -m pushpop.devdb -- sh -c '$(VENV)/bin/pushpop migrate && $(PYTHON) example/main.py'

test: $(STAMP) lint ## lint, then run the whole test suite against a real PostgreSQL
	$(PYTHON) -m pytest

lint: $(STAMP) ## ruff, mypy --strict, the generated sync modules and the docs site
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(PYTHON) tools/async_to_sync.py --check
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

format: $(STAMP) ## write the sync modules from their async sources; ruff's format and safe fixes
	$(PYTHON) tools/async_to_sync.py
	$(VENV)/bin/ruff check --fix
	$(VENV)/bin/ruff format

snapshot: $(STAMP) ## regenerate sql/schema.snapshot.sql from the SQL files
	$(PYTHON) tests/schema_snapshot.py

bench: $(STAMP) ## run the benchmarks (python -m benchmarks)
	@if [ -d benchmarks ]; then $(PYTHON) -m benchmarks; \
	else echo "make bench: there is no benchmarks/ folder yet" >&2; exit 1; fi

# The peers' packages (the `peers` extra); again only when pyproject.toml changes.
$(PEERS_STAMP): $(STAMP) pyproject.toml
	$(PYTHON) -m pip install --quiet -e '.[peers]'
	touch $@

bench-peers: $(PEERS_STAMP) ## pushpop against its peers (ARGS=--quick); writes docs/peers.md and .png
	@if [ ! -e /usr/share/postgresql/15/extension/pgq.control ] && command -v apt-get >/dev/null; then \
		echo "make bench-peers: installing postgresql-15-pgq3 for the PgQ row"; \
		apt-get install -y -q postgresql-15-pgq3 || { apt-get update -q && apt-get install -y -q postgresql-15-pgq3; } \
			|| echo "make bench-peers: could not install postgresql-15-pgq3; the PgQ row will say so" >&2; \
	fi
	$(PYTHON) -m benchmarks.peers $(ARGS)

bench-citus: $(STAMP) citus ## one server against Citus on 1 and 2 worker nodes (ARGS=--quick)
	$(PYTHON) -m benchmarks.citus $(ARGS)

citus: ## build and install Citus from CITUS_SOURCE (default ../shared/vendor/citus) unless installed
	tools/install_citus.sh

clean: ## remove caches and build output (keeps .venv)
	rm -rf dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
