# Developer entry points. Everything runs from the repo's own .venv; data lives under .data/.
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Prefer an explicit python3.11; otherwise whatever python3 is (checked below to be >= 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: venv run test lint bench migrate clean-data

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp (or the venv is missing).
$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: no python3.11 or python3 on PATH; install Python >= 3.11" >&2; exit 1; fi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: Python >= 3.11 required, but $(PYTHON) is $$($(PYTHON) -V 2>&1); set PYTHON=/path/to/python3.11" >&2; \
		exit 1; }
	@if [ ! -x $(BIN)/python ]; then echo "creating $(VENV) with $$($(PYTHON) -V 2>&1)"; $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

run: venv
	$(BIN)/mm up

# Two pytest-xdist workers, each file on one worker, each worker on an embedded server of its own (see
# tests/conftest.py). Against an external MM_DATABASE_URL the suite runs in one process: transaction ids are
# shared by a server's databases, so two workers there would hold back each other's log readers.
TEST_WORKERS ?= $(if $(MM_DATABASE_URL),0,2)
test: venv
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m ops.bench

migrate: venv
	$(BIN)/mm migrate

# Stops the embedded servers first: deleting PGDATA under a running postmaster leaves it running orphaned.
# .data/pg (make run) and .data/test-pg* (make test), plus any other cluster a crashed test left behind.
STOP_ALL := from pathlib import Path; from app.embedded_db import stop_embedded_postgres as stop; \
	[stop(d) for d in {Path(".data/pg"), Path(".data/test-pg"), *(p.parent for p in Path(".data").glob("**/PG_VERSION"))}]
clean-data:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -c '$(STOP_ALL)'; fi
	rm -rf .data
