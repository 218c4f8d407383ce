# The commands a person types. `make test` works from a fresh clone: it installs what it needs
# (.venv, the npm oracles, mosquitto, prometheus and postgresql when root), then lints, then
# runs the whole test suite in parallel workers. `make check` is the one-minute loop: lint, the
# unit tests and the in-process reliability tests, without the slow ones.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
PIP_STAMP := $(STAMPS)/pip
INTEROP := tests/interop
# npm writes this hidden lockfile on every install: it is the npm step's stamp, and it goes
# away with node_modules, so a deleted node_modules is reinstalled.
NPM_STAMP := $(INTEROP)/node_modules/.package-lock.json
# Extra arguments for pytest, e.g. make test PYTEST_ARGS='-k dht -x'
PYTEST_ARGS ?=
# Parallel workers (pytest-xdist). make test: 4 on two cores, measured: most integration tests
# wait on brokers, agents and sockets, so two workers per core finish sooner (docs/testing.md);
# TEST_WORKERS=0 runs in this one process. make check: one per core (auto), as unit tests are
# CPU-bound. --dist loadgroup runs the tests of one group (tests/conftest.py, GROUPS: the ones
# that start many processes, the CPU-bound corruption sweeps) one after another on one worker.
TEST_WORKERS ?= 4
CHECK_WORKERS ?= auto
# In CI (CI=true) a missing tool is an error; elsewhere it is a warning and its tests skip.
IN_CI := $(filter true True TRUE 1 yes,$(CI))

.PHONY: help venv install npm mosquitto prometheus postgres deps lint check test soak fuzz bench demo docs clean distclean

help:
	@echo "make check      the one-minute loop: lint, unit tests and in-process reliability tests"
	@echo "                (not the slow ones; no sockets, no node), in parallel workers"
	@echo "make test       install what is missing (.venv, npm oracles, mosquitto, prometheus,"
	@echo "                postgresql), lint, then every test in 4 parallel workers"
	@echo "                (make test TEST_WORKERS=0: in one process;"
	@echo "                pytest arguments: make test PYTEST_ARGS='-k name -x' or PYTEST_ARGS='-m interop')"
	@echo "make demo       the whole system on this machine, with a live view (Ctrl-C stops)"
	@echo "                (options: make demo DEMO_ARGS='--duration 60 --api-port 0')"
	@echo "make soak       the reliability suite's long runs (-m reliability, in one process), then its scorecard"
	@echo "make fuzz       every wire decoder under atheris (1,000,000 runs each)"
	@echo "make lint       ruff check and mypy --strict"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make docs       regenerate docs/reference/cli.md and config.md from the code"
	@echo "make deps       only the installs: venv + pip, npm packages, mosquitto, prometheus, postgresql"
	@echo "make clean      remove caches, build output and install stamps"
	@echo "make distclean  clean, and remove .venv and tests/interop/node_modules"

# -- installs ---------------------------------------------------------------------------------

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Cairn needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>&1)." \
	    "Run: make test PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python

# Reinstalls only when pyproject.toml changes (or the venv was made anew).
$(PIP_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

install: $(PIP_STAMP)

npm:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ -n "$(IN_CI)" ]; then \
	    echo "error: node and npm are required in CI for the interop tests (the JS oracles):" \
	      "install Node.js 20 or newer with npm (Debian: apt-get install nodejs npm)" >&2; \
	    exit 1; \
	  fi; \
	  echo "warning: node or npm is not on PATH: skipping npm ci; the interop tests will skip" >&2; \
	elif [ ! -f $(NPM_STAMP) ] || [ $(INTEROP)/package-lock.json -nt $(NPM_STAMP) ] \
	    || [ $(INTEROP)/package.json -nt $(NPM_STAMP) ]; then \
	  echo "cd $(INTEROP) && npm ci --no-audit --no-fund"; \
	  (cd $(INTEROP) && npm ci --no-audit --no-fund); \
	  touch $(NPM_STAMP); \
	fi

# A tool from a Debian package, for the tests that start their own (on 127.0.0.1, with their
# own config): $(1) the command, $(2) its path when not on PATH, $(3) the package, $(4) which
# tests need it. Installed with apt-get when root (where no policy-rc.d exists, a temporary one
# keeps apt from starting the system service); an error in CI when it cannot be; a warning
# (and those tests skip) elsewhere.
define apt_tool
	@if command -v $(1) >/dev/null 2>&1 || [ -x $(2) ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(3) with apt-get (the service is not started)"; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq; \
	  apt-get install -y -qq --no-install-recommends $(3); \
	elif [ -n "$(IN_CI)" ]; then \
	  echo "error: $(1) is required in CI and cannot be installed without root and apt-get:" \
	    "install Debian's $(3) package (apt-get install $(3))" >&2; \
	  exit 1; \
	else \
	  echo "warning: $(1) is not installed and this is not root: $(4) will skip" \
	    "(sudo apt-get install $(3))" >&2; \
	fi
endef

mosquitto:
	$(call apt_tool,mosquitto,/usr/sbin/mosquitto,mosquitto,its tests)
	$(call apt_tool,mosquitto_pub,/usr/bin/mosquitto_pub,mosquitto-clients,the docs walk)
	$(call apt_tool,curl,/usr/bin/curl,curl,the docs walk)

prometheus:
	$(call apt_tool,prometheus,/usr/bin/prometheus,prometheus,its scrape test and promtool (alert rules))

# The PostgreSQL store's tests start their own throwaway server (cairn_gateway.pgcluster).
# Debian puts the server's programs in /usr/lib/postgresql/<version>/bin, off PATH: the glob
# finds any version (the first match is enough to say it is installed).
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) /usr/lib/postgresql/initdb)

postgres:
	$(call apt_tool,initdb,$(PG_INITDB),postgresql,the PostgreSQL store tests)

# The NAT lab (tests/lab, docs/testing.md): network namespaces (iproute2), the routers'
# masquerade (nftables), their connection tables (conntrack). Its tests also need root.
.PHONY: natlab
natlab:
	$(call apt_tool,ip,/usr/sbin/ip,iproute2,the NAT lab tests)
	$(call apt_tool,nft,/usr/sbin/nft,nftables,the NAT lab tests)
	$(call apt_tool,conntrack,/usr/sbin/conntrack,conntrack,the NAT lab's outage test)

# The deployment tests check the Pi installer and the entrypoints with shellcheck and the units
# with systemd-analyze.
.PHONY: deploytools
deploytools:
	$(call apt_tool,shellcheck,/usr/bin/shellcheck,shellcheck,the deployment script tests)
	$(call apt_tool,systemd-analyze,/usr/bin/systemd-analyze,systemd,the unit tests)

deps: install npm mosquitto prometheus postgres natlab deploytools

# -- checks -------------------------------------------------------------------------------------

# The command and configuration reference, generated from the click commands, the config
# TEMPLATEs and the parts' configuration tables; tests/unit/test_docs.py fails when it is stale.
docs: $(PIP_STAMP)
	$(BIN)/python -m tests.docs_reference

lint: $(PIP_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Markers come from the folders (tests/conftest.py): unit, integration, interop, reliability, and
# slow for a measured list; e.g. make test PYTEST_ARGS='-m "integration and not slow"'.
check: lint
	$(BIN)/pytest -n $(CHECK_WORKERS) -m 'not slow' tests/unit tests/reliability $(PYTEST_ARGS)

test: deps lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The whole system on this machine: a broker (Mosquitto if installed, else the embedded one),
# a local DHT, 3 simulated boards, 3 edge agents and a gateway, with a live view. Needs only
# python3: it installs Cairn with the demo extra (or uses the dev install if make test made it).
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS='--duration 60 --api-port 0'.
DEMO_STAMP := $(STAMPS)/pip-demo
DEMO_ARGS ?=

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@if [ -f $(PIP_STAMP) ] && [ $(PIP_STAMP) -nt pyproject.toml ]; then :; else \
	  echo "$(BIN)/pip install -e '.[demo]'"; $(BIN)/pip install -q -e '.[demo]'; fi
	@mkdir -p $(STAMPS) && touch $@

demo: $(DEMO_STAMP)
	$(BIN)/cairn demo $(DEMO_ARGS)

# The reliability suite's long runs (the reliability marker: tests/reliability and
# tests/integration/*/test_reliability_*: crashes, corruption, hostile peers, DHT attacks, chaos),
# then the scorecard. make test runs the short version of each. In one process, not in workers:
# the long runs measure throughput and latency, which other tests on the same cores would skew.
# SOAK_ARGS passes pytest arguments (e.g. SOAK_ARGS='-n 4' when only the verdicts matter).
SOAK_ARGS ?=
soak: deps
	CAIRN_SOAK=full $(BIN)/pytest -m reliability -o timeout=0 -q $(SOAK_ARGS)

# Every wire decoder under atheris (fuzz/README.md): FUZZ_ARGS passes options, e.g. --runs 1000.
FUZZ_ARGS ?=
fuzz: $(PIP_STAMP)
	$(BIN)/python fuzz/run.py $(FUZZ_ARGS)

bench: $(PIP_STAMP) npm postgres
	$(BIN)/python bench/log.py
	$(BIN)/python bench/dht.py
	$(BIN)/python bench/hyperdht_connect.py
	$(BIN)/python bench/replication.py
	$(BIN)/python bench/udx.py
	$(BIN)/python bench/sim.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/pg_sizes.py
	$(BIN)/python bench/store_migrate.py
	$(BIN)/python bench/failover.py

# -- cleaning -----------------------------------------------------------------------------------

clean:
	rm -rf $(STAMPS) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -path ./$(INTEROP)/node_modules -prune -o \
	  \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 | xargs -0 -r rm -rf

distclean: clean
	rm -rf $(VENV) $(INTEROP)/node_modules
