# The two set-up commands of the README: `make demo` and `make test`. Everything else is detail.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv clean

$(BIN)/hyt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/hyt

venv: $(BIN)/hyt

demo: venv
	$(BIN)/hyt demo

test: venv
	scripts/system-deps.sh
	scripts/test.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) hyt-demo.db* huyuantong.db* .mypy_cache .pytest_cache .ruff_cache
