# Two commands for a new user: `make demo` and `make test`. Each sets itself up first.
SHELL := /bin/bash
PY ?= python3.11
# The worker's own function indexer (azure-functions-runtime) needs Python >= 3.13.
PY313 ?= $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13) $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null))
VENV := .venv
BIN := $(VENV)/bin
AZURITE := tools/node_modules/.bin/azurite

.PHONY: all deps demo test test-under-load lint bench soak clean lock schemas

all: deps

deps: $(VENV)/.installed $(AZURITE) .venv-checkov/.installed .venv-index/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.txt
	@touch $@

# The locks: requirements.in / requirements-dev.in (what the code imports, pinned) resolved with every transitive
# package into requirements.txt / requirements-dev.txt, with the hash of each file of each release, so a remote
# build installs exactly what was tested. Pins already in a lock are kept; `make lock UPGRADE=1` takes the newest
# releases the .in files allow. uv runs from a throwaway venv outside the repo.
LOCK_VENV ?= /tmp/passkey-guard-lock
UV_VERSION := 0.13.9
LOCK := $(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 $(if $(UPGRADE),--upgrade)

lock:
	@test -x $(LOCK_VENV)/bin/uv || { $(PY) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) requirements-dev.in -o requirements-dev.txt

# The files generated from the pydantic models (shared/schemas): the desired-state JSON Schema and the OpenAPI
# request-body components. tests/schemas/test_generate.py fails when a committed one is stale.
schemas: $(VENV)/.installed
	$(BIN)/python -m shared.schemas

# Azurite from npm, into a git-ignored folder of the repo (3.35: the last release for Node 20).
$(AZURITE): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# checkov pins an old pycep-parser that cannot read our templates: its own venv, then 0.7.1 over it.
.venv-checkov/.installed:
	@test -x .venv-checkov/bin/python || $(PY) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q --disable-pip-version-check checkov==3.3.30
	.venv-checkov/bin/python -m pip install -q --disable-pip-version-check --no-deps pycep-parser==0.7.1
	@touch $@

.venv-index/.installed:
	@test -n "$(PY313)" || { echo "Python 3.13 is needed for the worker's index check (set PY313=/path/to/python3.13)"; exit 1; }
	@test -x .venv-index/bin/python || $(PY313) -m venv .venv-index
	.venv-index/bin/python -m pip install -q --disable-pip-version-check azure-functions-runtime==1.3.0 azure-functions==2.3.0
	@touch $@

demo: $(VENV)/.installed $(AZURITE)
	$(BIN)/python -m devhost.demo

test: deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The suite RUNS times in a row (stopping at the first failure) while one CPU burner per core loads the machine;
# PYTEST_ARGS narrows it (e.g. PYTEST_ARGS=tests/graphsim); RESUME=1 goes on with an unfinished series of the same
# commit. Report: .reliability/under-load.json.
RUNS ?= 10
PYTEST_ARGS ?=
RESUME ?=
test-under-load: deps
	$(BIN)/python -m bench.suite_under_load --runs $(RUNS) $(if $(RESUME),--resume) -- $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .venv-checkov .venv-index tools/node_modules .demo

.PHONY: reliability

# The reliability tests alone (they also run in `make test`), then their figures into README.md's table.
reliability: deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability
	$(BIN)/python -m tests.reliability.report --write-readme

# The same tests five times bigger (users renamed, kills, fuzz examples); figures into .reliability/soak.json.
soak: deps
	PG_SOAK=5 PG_RELIABILITY_SUMMARY=.reliability/soak.json $(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability
	$(BIN)/python -m tests.reliability.report --summary .reliability/soak.json
