# keras_mgr: `make demo` runs the end-to-end example, `make test` the tests.
# Both set up .venv on first use (CPU TensorFlow); see README for GPU / Colab.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := setup.py requirements-test.txt requirements-nodeps.txt constraints.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQUIREMENTS) | cksum | cut -d' ' -f1)
# `make test-latest`: the newest releases of everything, in a venv of their own.
LATEST := .venv-latest
PYTEST_ARGS ?=
# The core of the suite, run again under KERAS_BACKEND=jax and =torch by
# `make test` (tests of TensorFlow-only features are marked tensorflow_only
# and skipped there with the reason).
CORE_TESTS := tests/test_backends.py tests/test_failures.py tests/test_saved_fixtures.py
# The files that run under JAX and PyTorch (`make test-jax`, `make test-torch`);
# the others test TensorFlow's own paths (tf.distribute, the fused kernel, tapes).
BACKEND_TESTS := $(CORE_TESTS) tests/test_model.py tests/test_errors.py tests/test_saving.py \
	tests/test_microbatches.py tests/test_finder_options.py tests/test_callbacks.py \
	tests/test_data_checks.py tests/test_option_checks.py tests/test_saved_options.py \
	tests/test_failed_writes.py tests/test_regularizer.py tests/test_augment.py \
	tests/test_generators.py tests/test_layer_contract.py tests/test_mixed_precision.py

.PHONY: setup demo test test-jax test-torch test-slow test-latest constraints lint format clean

setup: $(STAMP)

# Installs the versions the suite was run with (constraints.txt); setup.py's
# own requirements stay ranges for users.
$(STAMP): $(REQUIREMENTS)
	@echo "Setting up $(VENV): TensorFlow, JAX and PyTorch (CPU), Keras and the test tools,"
	@echo "about 3.1 GB;"
	@echo "about 5 minutes on a first run (pip is quiet meanwhile), seconds afterwards."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[cpu,jax,torch]" -r requirements-test.txt
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps -r requirements-nodeps.txt
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
# test's time is single-threaded tracing, so two processes use both cores
# (638 tests in 8 min 19 s, then the JAX core in 55 s and the PyTorch core in 17 s:
# 9 min 57 s on an idle 2-core machine). The cores run per test (--dist load).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -n 2 --dist load $(CORE_TESTS) $(PYTEST_ARGS)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -n 2 --dist load $(CORE_TESTS) $(PYTEST_ARGS)

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -n 2 --dist loadfile $(BACKEND_TESTS) $(PYTEST_ARGS)

test-torch: $(STAMP)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -n 2 --dist loadfile $(BACKEND_TESTS) $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# The fast suite against the newest releases of every dependency (no
# constraints, keras-hub and animal_mnist unpinned): run before raising a pin.
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade -e ".[cpu]" -r requirements-test.txt
	sed -e 's/==[^ ]*//' requirements-nodeps.txt > $(LATEST)/nodeps.txt
	$(LATEST)/bin/python -m pip install -q --upgrade --no-deps -r $(LATEST)/nodeps.txt
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -i -E '^(tensorflow|keras|numpy|h5py) '
	$(LATEST)/bin/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

# Rewrites constraints.txt from $(VENV) (after the suite passed on an upgrade).
constraints: $(STAMP)
	head -4 constraints.txt > constraints.new
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^#' >> constraints.new
	mv constraints.new constraints.txt

# One home per concept: mode questions go to the mode table and "auto"
# options to terms.resolve_auto (keras_mgr/terms.py); the greps find none elsewhere.
MODE_NAME := \"(base|gda|metagda|pcr|mgr)\"
lint: $(STAMP)
	$(BIN)/ruff check keras_mgr tests benchmarks
	@! grep -rnE "mode (not )?in \(|mode [!=]= $(MODE_NAME)|$(MODE_NAME): \(" keras_mgr \
		--include=*.py --exclude=terms.py || (echo "mode questions belong to terms.MODE_TABLE"; exit 1)
	@! grep -rnE "== \"auto\"" keras_mgr --include=*.py --exclude=terms.py \
		--exclude=checks.py --exclude=conditional_gan.py \
		|| (echo "wrap()'s \"auto\" options are resolved by terms.resolve_auto"; exit 1)

format: $(STAMP)
	$(BIN)/ruff format keras_mgr tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info .pytest_cache .ruff_cache
