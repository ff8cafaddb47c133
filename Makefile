# devprod: `make plan` and `make test` work from a fresh clone with only
# Python 3.11, make and apt-get installed. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.devprod-installed
STACK  ?= dev
PYTEST_WORKERS ?= 2

.PHONY: setup plan plan-json test test-fast up lint clean

setup: $(STAMP)

# Reinstall only when the dependency lists change (idempotent, quick when current).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

plan: setup
	$(BIN)/devprod plan $(STACK)

plan-json: setup
	$(BIN)/devprod plan $(STACK) --json

# The whole suite, slow real-process tests included (as CI runs it).
test: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q

test-fast: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q -m "not slow"

# Needs the Pulumi CLI, a logged-in backend and AWS credentials (see README).
up: setup
	pulumi up --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info scripts/*.egg-info
