# precompute-assets: `make run` builds the store from PARQUET_DATA_PATH, `make test` runs every test.
SHELL := /bin/bash
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test dev sample lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.yaml $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m precompute_assets.cli.make_run

test: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# `dagster dev` with the project's daemon, which looks at backfills every 2 s instead of Dagster's
# fixed 30 s (precompute_assets/cli/daemon.py says why).
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m precompute_assets.cli.dev -h 127.0.0.1 -p 3000 -w workspace.yaml

sample: install
	$(PY) scripts/generate_sample.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

bench: install
	$(PY) bench/full_market.py

clean:
	rm -rf data/qlib_data data/.qlib_data_work .dagster_home
