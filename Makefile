# Two entry points for a new user: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench

$(STAMP): pyproject.toml examples/medfuse-example-plugin/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps --no-build-isolation -e examples/medfuse-example-plugin
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/medfuse demo

lint: $(STAMP)
	$(BIN)/ruff check core plugins tests bench examples

# Every test, the slow end-to-end ones on real data included (they skip when the data is absent).
test: lint
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/pytest -n 2 --dist loadfile -q

test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/pytest -n 2 --dist loadfile -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/run_studies.py
