# The two commands a newcomer needs: `make demo` and `make test`. Both do their own set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-deps testenv-up testenv-down testenv-status demo test test-fast lint crds bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Debian packages the environment and the benchmark use (kcat is the C baseline).
system-deps:
	@command -v kcat >/dev/null && command -v openssl >/dev/null && command -v java >/dev/null \
	  || { apt-get update -q && apt-get install -y -q kcat openssl default-jre-headless; }

setup: system-deps $(VENV)/.installed

testenv-up: setup
	bash hack/testenv.sh up

testenv-down:
	bash hack/testenv.sh down

testenv-status:
	bash hack/testenv.sh status

demo: testenv-up
	$(PY) hack/demo.py

test: testenv-up
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

crds: setup
	$(PY) -m ingest_operator.crdgen > crds/csvingestion.yaml

bench: testenv-up
	$(PY) bench/bench.py
