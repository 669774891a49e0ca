# SenseQuant: `make run` starts Dagster (UI + daemon), `make test` runs lint and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install run test test-scaleout lint format clean

$(STAMP): pyproject.toml setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml $(STAMP)
	$(BIN)/python -c 'import sys; from sensequant_assets.deployment.devserver import write_instance_yaml as w; w(sys.argv[1])' "$(DAGSTER_HOME)"

run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m sensequant_assets.deployment.devserver -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers (pytest-xdist), each file on one worker: its module fixtures are set up once. Files are
# handed out in collection order (the longest first: sensequant_tests/conftest.py), not by test count.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Dagster's distributed deployment (deploy/scaleout/: PostgreSQL, Celery on RabbitMQ) tested on this machine.
# Its libraries pin the dagster release they were built with, so they get an environment of their own.
SCALEOUT_VENV := .venv-scaleout
SCALEOUT_STAMP := $(SCALEOUT_VENV)/.installed-stamp

$(SCALEOUT_STAMP): pyproject.toml setup.cfg
	test -x $(SCALEOUT_VENV)/bin/python || $(PYTHON) -m venv $(SCALEOUT_VENV)
	$(SCALEOUT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SCALEOUT_VENV)/bin/python -m pip install --quiet -e ".[dev,scaleout]"
	touch $(SCALEOUT_STAMP)

test-scaleout: $(SCALEOUT_STAMP)
	$(SCALEOUT_VENV)/bin/pytest -p no:cacheprovider -rs sensequant_tests/test_scaleout.py sensequant_tests/test_executors.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(SCALEOUT_VENV) .pytest_cache .ruff_cache *.egg-info
