# mlbatch: two commands on a fresh machine.
#   make demo   the whole pipeline on the embedded stack (no AWS, no Google account)
#   make test   the test suite (installs what the tests need, starts its own servers)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export AIRFLOW_HOME := $(CURDIR)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-unit lint venv status clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
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

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf var
