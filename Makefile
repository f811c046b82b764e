# keras_mgr: `make demo` runs the end-to-end example, `make test` the tests.
# Both set up .venv on first use (CPU TensorFlow); see README for GPU / Colab.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py requirements-test.txt requirements-nodeps.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint format clean

setup: $(STAMP)

$(STAMP): setup.py requirements-test.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu]" -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/python -m keras_mgr.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check keras_mgr tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format keras_mgr tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
