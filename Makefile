# One-command start and test on a machine with nothing but Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test test-fast bench mock-upstream clean

$(BIN)/gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/gateway
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/gateway  ## migrate, seed a first admin and the demo, serve on :8080
	$(BIN)/gateway serve --port $(PORT)

test: $(VENV)/.test-deps  ## the whole suite: SQLite, Postgres, Redis, browser
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-fast: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not postgres and not browser" $(PYTEST_ARGS)

bench: $(VENV)/.test-deps
	$(BIN)/python bench/overhead.py

mock-upstream: $(BIN)/gateway
	$(BIN)/gateway mock-upstream --port 9000

clean:
	rm -rf $(VENV) build *.egg-info
