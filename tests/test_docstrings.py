"""Every example in keras_mgr's docstrings runs and prints what it shows
(doctest), so an example cannot drift from the code it documents."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_mgr

# Examples that train for a while run in `make test-slow`.
SLOW = {"keras_mgr.generators": "trains a judge on all of digits (~2.5 min)",
        "keras_mgr.generators.conditional_gan": "compiles a GAN step (~17 s)"}


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(keras_mgr.__path__, "keras_mgr."):
        spec = importlib.util.find_spec(info.name)
        with open(spec.origin) as source:
            if ">>>" in source.read():
                names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert len(MODULES) >= 20 and "keras_mgr.synthetic" in MODULES


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODULES])
def test_examples_run_as_shown(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, extraglobs={"keras_mgr": keras_mgr, "keras": keras, "np": np},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0 and result.failed == 0, (
        f"{result.failed} of {result.attempted} examples in {name}")
