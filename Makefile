# mlbatch: two commands on a fresh machine.
#   make demo   the whole pipeline on the embedded stack (no AWS, no Google account)
#   make test   the test suite (installs what the tests need, starts its own servers)
#   make lint   ruff (complexity at most 10), the import contracts between layers, no import cycle,
#               a reason beside each import inside a function, and mypy (strict);
#               .ci/run runs it first

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export AIRFLOW_HOME := $(CURDIR)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-unit lint venv status clean images airflow

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements/airflow.txt requirements/jobs.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

demo: venv
	$(BIN)/mlbatch demo

status: venv
	$(BIN)/mlbatch status

test: venv
	$(BIN)/python -m pytest -q --timeout 900

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# Job images (train, score) on the debootstrap base; tags are content hashes, so a rerun with
# unchanged code builds nothing. Needs a Docker daemon (DOCKER_HOST). TORCH=none|pypi|wheel.
IMAGE_BASE ?= mlbatch/debian-base:12
TORCH      ?= none
images: venv
	docker/build-base.sh $(IMAGE_BASE)
	$(BIN)/mlbatch images build train score airflow --base-image $(IMAGE_BASE) --torch $(TORCH)

# The Airflow UI on the embedded stack: `airflow standalone` (API server + UI on :8080, scheduler,
# DAG processor, triggerer; LocalExecutor on SQLite) with this repo's airflow.cfg. Runs the demo
# first when there is no embedded stack yet, so the score DAG has a production model; creates the
# GPU pool (size: MLBATCH_GPU_POOL_SLOTS). Every user is an admin (local development only).
airflow: venv
	test -f var/app.db || $(BIN)/mlbatch demo
	$(BIN)/python -m airflow db migrate >/dev/null
	$(BIN)/python -m mlbatch.airflow.pools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/airflow standalone

# What .ci/run checks before the tests: lint (complexity at most 10), formatting, the import
# contracts between layers (pyproject.toml [tool.importlinter]) and the types (mypy, strict on
# mlbatch and jobs/: pyproject.toml [tool.mypy]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m devtools.import_cycles
	$(BIN)/python -m devtools.local_imports
	$(BIN)/mypy

clean:
	rm -rf var
