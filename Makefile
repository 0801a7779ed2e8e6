# One-command start and test on a machine with nothing but Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test test-fast bench bench-quick bench-overhead bench-console mock-upstream wheel clean

$(BIN)/gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/gateway
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/gateway  ## migrate, seed a first admin and the demo, serve on 127.0.0.1:8080 (HOST=0.0.0.0 opens it)
	$(BIN)/gateway serve --port $(PORT)

test: $(VENV)/.test-deps  ## the whole suite: SQLite, Postgres, Redis, browser
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-fast: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not postgres and not browser" $(PYTEST_ARGS)

LITELLM_VENV := bench/.venv-litellm

$(LITELLM_VENV)/bin/litellm:  ## LiteLLM in a venv of its own, for the side-by-side benchmark
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q 'litellm[proxy]==1.106.2'

bench: $(VENV)/.test-deps $(LITELLM_VENV)/bin/litellm  ## the gateway against LiteLLM behind one nginx (~8 min)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

bench-quick: $(VENV)/.test-deps $(LITELLM_VENV)/bin/litellm
	$(BIN)/python bench/compare.py --quick $(BENCH_ARGS)

bench-overhead: $(VENV)/.test-deps  ## gateway against the mock upstream only, at 1, 16 and 64
	$(BIN)/python bench/overhead.py

bench-console: $(VENV)/.test-deps  ## every console page timed on 100,000 usage records (BENCH_ARGS=--postgres)
	$(BIN)/python bench/console_pages.py $(BENCH_ARGS)

mock-upstream: $(BIN)/gateway
	$(BIN)/gateway mock-upstream --port 9000

wheel: $(BIN)/gateway  ## dist/gateway-*.whl, with templates, static files and migrations inside
	$(BIN)/pip wheel -q --no-deps -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info
