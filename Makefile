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
export UV_PYTHON_DOWNLOADS := never
# Tests and the demo use a throw-away Airflow home, never ~/airflow.
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: help venv test test-all lint fmt typecheck unit demo e2e bench bench-smoke soak reliability lock clean

help:
	@echo "make test      ruff, mypy and pytest on Airflow $(AIRFLOW) (AIRFLOW=2.11.2 for the other)"
	@echo "make test-all  the same on every supported Airflow: $(AIRFLOW_VERSIONS)"
	@echo "make demo      an example DAG end to end against the bundled simulator (no API key)"
	@echo "make e2e       Airflow 3 on PostgreSQL (scheduler, triggerer, ...), faults, and the UI in Chromium"
	@echo "make bench     the benchmarks in benchmarks/, each printing its figures (bench-smoke: a short run)"
	@echo "make reliability  every endpoint x every fault against the simulator; writes docs/reliability.md"
	@echo "make soak      10,000 messages with faults and a SIGKILL; SOAK_N=1000 for a short one"
	@echo "make lock      re-pin constraints/ after a dependency change"

# A venv of its own for uv: `python -m venv` then that venv's pip, so the system Python is never touched.
$(UV):
	@rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

# The marker is written last, and only once the venv really holds the package and its tools, so an
# interrupted install is simply redone by the next make.
$(BIN)/.installed: $(LOCK) pyproject.toml | $(UV)
	@rm -f $@
	$(UV) venv -q --allow-existing --python "$$(command -v $(PYTHON))" $(VENV)
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

# A real deployment: needs root (or the packages already there) for Debian's postgresql and chromium.
# E2E_AIRFLOW=3.4.0b2 runs it on the next Airflow's beta, whose UI can test a connection without a port.
E2E_AIRFLOW ?= 3.3.2
e2e:
	$(MAKE) --no-print-directory venv AIRFLOW=$(E2E_AIRFLOW)
	.venv/airflow-$(E2E_AIRFLOW)/bin/python -m e2e

bench: venv
	@set -e; for b in benchmarks/bench_*.py; do $(BIN)/python $$b; done

# A short run of every benchmark, so none of them rots (CI runs this; the figures mean little).
bench-smoke: venv
	$(BIN)/python benchmarks/bench_pacing.py 6
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

lock: $(UV)
	@set -e; for v in $(AIRFLOW_VERSIONS); do \
	  $(UV) pip compile -q --python-version 3.11 --extra dev --extra bench --extra e2e --extra docs pyproject.toml constraints/airflow-$$v.in \
	    -o constraints/airflow-$$v.txt --custom-compile-command "make lock"; done
	$(UV) pip compile -q --python-version 3.11 --prerelease=if-necessary-or-explicit --extra dev --extra bench \
	  --extra e2e --extra docs pyproject.toml constraints/airflow-3.4.0b2.in -o constraints/airflow-3.4.0b2.txt \
	  --custom-compile-command "make lock"

clean:
	rm -rf .venv build .mypy_cache .ruff_cache .pytest_cache

# The Sphinx site in docs/ into build/docs; every warning is an error (`make lock` pins Sphinx).
.PHONY: docs
docs: venv
	$(BIN)/sphinx-build -q -W --keep-going -b html docs build/docs
