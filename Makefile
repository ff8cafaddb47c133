# devprod: `make plan` and `make test` work from a fresh clone with only
# Python 3.11, make and apt-get installed. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.devprod-installed
STACK  ?= dev
PYTEST_WORKERS ?= 2

.PHONY: setup system-deps plan plan-json test test-fast up clean

# Host tools the tests run for real (deploy.sh, key parsing, git clones; the
# app user, its privilege drop and the metadata firewall in a network namespace;
# nginx in front of the app's two slots).
SYSTEM_TOOLS := curl flock ssh-keygen sha256sum tar git bash setpriv runuser unshare timeout useradd nft ip pgrep nginx /usr/bin/python3

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

# Installs only what is missing, so it is quick and needs no root when nothing is.
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  apt-get update -qq && apt-get install -y -qq curl openssh-client util-linux coreutils tar git bash passwd nftables iproute2 procps nginx python3; \
	fi

# The whole suite, slow real-process tests included (as CI runs it).
test: setup system-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -q

test-fast: setup system-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q -m "not slow"

# Needs the Pulumi CLI, a logged-in backend and AWS credentials (see README).
up: setup
	pulumi up --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
