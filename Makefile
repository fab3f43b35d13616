# One entry point per job. AIRFLOW picks the Airflow version (and its pinned lock in constraints/).
AIRFLOW ?= 3.3.2
AIRFLOW_VERSIONS := 3.3.2 2.11.2
UV_VERSION := 0.13.9
PYTHON ?= python3
VENV := .venv/airflow-$(AIRFLOW)
BIN := $(VENV)/bin
LOCK := constraints/airflow-$(AIRFLOW).txt
# Our own tools live in the project's folders: uv is bootstrapped into .venv/tools, never into the
# interpreter that runs make, and every install below names its target environment.
TOOLS := .venv/tools
UV := $(TOOLS)/bin/uv
UV_READY := $(TOOLS)/.uv-$(UV_VERSION)
export UV_PYTHON_DOWNLOADS := never
# Tests and the demo use a throw-away Airflow home, never ~/airflow.
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: help uv venv test test-all lint fmt typecheck unit demo e2e e2e-local e2e-celery bench bench-smoke soak reliability dist dist-check lock clean

help:
	@echo "make test      ruff, mypy and pytest on Airflow $(AIRFLOW) (AIRFLOW=2.11.2 for the other)"
	@echo "make test-all  the same on every supported Airflow: $(AIRFLOW_VERSIONS)"
	@echo "make demo      the example DAGs end to end against the bundled simulator (no API key)"
	@echo "make e2e       Airflow 3 on PostgreSQL, both parts below (about 8 minutes)"
	@echo "make e2e-local   LocalExecutor: scheduler, triggerer, ..., faults, replies, the UI in Chromium"
	@echo "make e2e-celery  CeleryExecutor with Redis: two workers, one shared rate limit, StatsD"
	@echo "make bench     the benchmarks in benchmarks/, each printing its figures (bench-smoke: a short run)"
	@echo "make reliability  every endpoint x every fault against the simulator; writes docs/reliability.md"
	@echo "make soak      10,000 messages with faults and a SIGKILL; SOAK_N=1000 for a short one"
	@echo "make dist      wheel and sdist in dist/, checked by twine check --strict"
	@echo "make dist-check  make dist, then the wheel in a bare venv next to only apache-airflow, each version"
	@echo "make lock      re-pin constraints/ after a dependency change"
	@echo "make venv      just the install: uv in .venv/tools, then .venv/airflow-$(AIRFLOW) (nothing outside .venv/)"
	@echo "make clean     remove .venv, build and dist"

# uv is bootstrapped into a venv of its own, .venv/tools: `python -m venv`, then that venv's pip. Where
# python3 cannot make a venv with pip (Debian without python3-venv), its pip installs uv with --target
# into .venv/tools instead, which leaves that interpreter as it was. $(UV_READY) is written last, once
# uv answers with the pinned version: a bootstrap cut short is redone, a new UV_VERSION re-bootstraps.
$(UV_READY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: needs Python 3.11 or newer as '$(PYTHON)' (or name one: make ... PYTHON=python3.12)" >&2; exit 1; }
	@rm -rf $(TOOLS)
	@set -e; \
	echo "$(PYTHON) -m venv $(TOOLS)"; \
	if $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip --version >/dev/null 2>&1; then \
	  echo "$(TOOLS)/bin/python -m pip install uv==$(UV_VERSION)"; \
	  $(TOOLS)/bin/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"; \
	elif rm -rf $(TOOLS) && $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	  echo "make: '$(PYTHON) -m venv' gives no pip here; installing uv with '$(PYTHON) -m pip install --target $(TOOLS)'"; \
	  $(PYTHON) -m pip install -q --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
	    --target $(TOOLS) "uv==$(UV_VERSION)"; \
	else \
	  echo "make: '$(PYTHON)' can make neither a venv with pip (ensurepip is missing) nor use pip, so uv" >&2; \
	  echo "      cannot be bootstrapped into $(TOOLS). On Debian or Ubuntu: apt-get install python3-venv" >&2; \
	  echo "      (or python3-pip); elsewhere, a Python 3.11+ built with ensurepip, as PYTHON=..." >&2; \
	  exit 1; \
	fi
	@$(UV) --version | grep -q "^uv $(UV_VERSION)[ ]" || { echo "make: $(UV) is not uv $(UV_VERSION)" >&2; exit 1; }
	@touch $@

uv: $(UV_READY)

# The marker is written last, and only once the venv really holds the package and its tools, so an
# interrupted install is redone by the next make. Redone from an empty venv: a sync cut short can leave
# a package's metadata without its files, which a second sync would take as installed (uv links from
# its cache, so starting over costs seconds).
$(BIN)/.installed: $(LOCK) pyproject.toml | $(UV_READY)
	@rm -f $@
	$(UV) venv -q --clear --python "$$(command -v $(PYTHON))" $(VENV)
	$(UV) pip sync -q --python $(BIN)/python $(LOCK)
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -c "import airflow_provider_autocalls" && test -x $(BIN)/ruff && test -x $(BIN)/mypy
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

test-all:
	@set -e; for v in $(AIRFLOW_VERSIONS); do echo "== Airflow $$v"; $(MAKE) --no-print-directory test AIRFLOW=$$v; done

demo: venv
	$(BIN)/python scripts/demo.py

# Real deployments: needs root (or the packages already there) for Debian's postgresql, chromium and
# redis-server. `make e2e` runs both of its parts: e2e-local (LocalExecutor: faults, replies, the UI)
# and e2e-celery (the CeleryExecutor with Redis as broker and shared rate limit, two Celery workers,
# StatsD on; two bulk sends and a mapped send with one key). E2E_AIRFLOW=3.4.0b2 runs them on the next
# Airflow's beta, whose UI can test a connection without a port.
E2E_AIRFLOW ?= 3.3.2
e2e: e2e-local e2e-celery

e2e-local:
	$(MAKE) --no-print-directory venv AIRFLOW=$(E2E_AIRFLOW)
	.venv/airflow-$(E2E_AIRFLOW)/bin/python -m e2e

e2e-celery:
	$(MAKE) --no-print-directory venv AIRFLOW=$(E2E_AIRFLOW)
	.venv/airflow-$(E2E_AIRFLOW)/bin/python -m e2e.distributed

bench: venv
	@set -e; for b in benchmarks/bench_*.py; do $(BIN)/python $$b; done

# A short run of every benchmark, so none of them rots (CI runs this; the figures mean little).
bench-smoke: venv
	$(BIN)/python benchmarks/bench_pacing.py 10 --quick
	$(BIN)/python benchmarks/bench_shared_limit.py --quick
	$(BIN)/python benchmarks/bench_client_overhead.py 100
	$(BIN)/python benchmarks/bench_parse_cost.py 2
	$(BIN)/python benchmarks/bench_triggerer.py 4
	$(BIN)/python benchmarks/bench_bulk.py --quick

# The fault matrix (tests/reliability/test_fault_matrix.py) and docs/reliability.md from what it saw.
reliability: venv
	$(BIN)/python scripts/reliability_table.py

# 10,000 messages with ~5 % faults, a SIGKILL of the worker and retries; checks the accounting.
SOAK_N ?= 10000
soak: venv
	$(BIN)/python scripts/soak.py $(SOAK_N)

# The wheel and sdist in dist/, built by the bootstrapped uv in an isolated build env whose backend is
# pinned in constraints/build.txt, then checked by twine as the package index would check them.
dist: venv
	rm -rf dist
	$(UV) build -q --python "$$(command -v $(PYTHON))" --build-constraint constraints/build.txt --out-dir dist
	$(BIN)/twine check --strict dist/*

# The built wheel in a bare venv under build/dist-check next to only apache-airflow, on each supported
# Airflow (pinned by its lock): `airflow providers list` shows it and the example DAGs import.
dist-check: dist
	$(BIN)/python scripts/check_dist.py --uv $(UV) --python "$$(command -v $(PYTHON))" $(AIRFLOW_VERSIONS)

lock: $(UV_READY)
	@set -e; for v in $(AIRFLOW_VERSIONS); do \
	  $(UV) pip compile -q --python-version 3.11 --extra dev --extra bench --extra e2e --extra dist --extra redis --extra docs pyproject.toml constraints/airflow-$$v.in \
	    -o constraints/airflow-$$v.txt --custom-compile-command "make lock"; done
	$(UV) pip compile -q --python-version 3.11 --prerelease=if-necessary-or-explicit --extra dev --extra bench \
	  --extra e2e --extra dist --extra redis --extra docs pyproject.toml constraints/airflow-3.4.0b2.in -o constraints/airflow-3.4.0b2.txt \
	  --custom-compile-command "make lock"
	@# The build backend too (the one requirement of [build-system] in pyproject.toml), for `make dist`.
	echo "hatchling>=1.25" | $(UV) pip compile -q --python-version 3.11 - -o constraints/build.txt \
	  --custom-compile-command "make lock"

clean:
	rm -rf .venv build dist .mypy_cache .ruff_cache .pytest_cache

# The Sphinx site in docs/ into build/docs; every warning is an error (`make lock` pins Sphinx).
.PHONY: docs
docs: venv
	$(BIN)/sphinx-build -q -W --keep-going -b html docs build/docs
