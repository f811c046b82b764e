# keras_mgr: `make demo` runs the end-to-end example, `make test` the tests.
# Both set up .venv on first use (CPU TensorFlow); see README for GPU / Colab.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py requirements-test.txt requirements-nodeps.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint format clean

setup: $(STAMP)

$(STAMP): setup.py requirements-test.txt requirements-nodeps.txt
	@echo "Setting up $(VENV): TensorFlow (CPU), Keras and the test tools, about 2.3 GB;"
	@echo "about 5 minutes on a first run (pip is quiet meanwhile), seconds afterwards."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu]" -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-* && touch $@

# TensorFlow prints a few start-up lines (oneDNN, CPU features) that no log
# level silences in 2.21, and grappler logs harmless optimizer errors; the
# demo's own output passes through unchanged.
TF_STARTUP := -e 'port.cc:153] oneDNN' -e 'cpu_feature_guard' \
	-e 'To enable the following instructions' -e 'absl::InitializeLog' \
	-e 'meta_optimizer.cc:[0-9]*] remapper failed' -e 'oneDNN supports DT_'

demo: $(STAMP)
	set -o pipefail; TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -u -m keras_mgr.demo 2>&1 \
		| grep --line-buffered -v $(TF_STARTUP)

# Two pytest processes, a test file each at a time (pytest-xdist): most of a
# test's time is single-threaded tracing, so the run takes ~55% of a serial one
# on 2 cores (5 min 39 s against 10 min 01 s, same machine).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check keras_mgr tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format keras_mgr tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
