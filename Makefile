# The README's commands. Everything installs into .venv from this project's own files.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports bench install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the demo flow into ./nbflow.duckdb, print its frames, run it again (all cached).
demo: $(STAMP)
	$(BIN)/python -m nbflow.demo

## The whole suite: lint, format check, types, the layers' contracts, tests.
test: $(STAMP) lint typecheck imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check nbflow tests benchmarks
	$(BIN)/ruff format --check nbflow tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

## The import-linter contracts of pyproject.toml: layers import only downward (docs/architecture.md).
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

## Benchmarks: medians and ratios, measured side by side in one run, with the peers
## (Hamilton, DBOS, joblib: the bench extra) installed into the venv first.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
