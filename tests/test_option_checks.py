"""wrap()'s options, and the arguments of the parts users build directly, are
checked for type and range: nothing is silently converted (`int(2.5)`, a truthy
`"false"`) and sizes that cannot fit name the option and the memory."""

import re
import sys

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr import Finder, ViewAugmentation, batchnorm, option_checks
from keras_mgr.callbacks import SampleGrid
from keras_mgr.generators import GeneratorAdapter


def wrap(**options):
    return keras_mgr.wrap(tiny.backbone(), tiny.generator(), **options)


@pytest.fixture
def nothing_built(monkeypatch):
    """wrap() must refuse before it changes the backbone or builds the model."""
    def reached(*args, **kwargs):
        raise AssertionError("reached after the checks")

    monkeypatch.setattr(sys.modules["keras_mgr.wrapping"], "MGRModel", reached)
    monkeypatch.setattr(batchnorm, "set_momentum", reached)


def refused(name, value, rule, call=wrap, **others):
    """`call(name=value)` raises a ValueError stating `rule` and ending with
    `Received: name=value`."""
    with pytest.raises(ValueError, match=rf"{re.escape(name)} must be {rule}.*"
                                         rf"Received: {re.escape(name)}={re.escape(repr(value))}$"):
        call(**{name: value}, **others)


@pytest.mark.parametrize("name, value, rule", [
    ("finder_hidden_dim", 2.5, "an integer >= 1"),
    ("finder_num_layers", -1, "an integer >= 1"),
    ("finder_num_layers", 0, "an integer >= 1"),
    ("finder_max_shift", True, r"> 0 and finite"),
    ("finder_max_shift", float("inf"), r"> 0 and finite"),
    ("seed", 2.5, r"an integer in \[0, 2\*\*63 - 2\] or None"),
    ("seed", True, "an integer"),
    ("seed", "0", "an integer"),
    ("seed", -1, "an integer"),
    ("num_classes", 0, "an integer >= 2 or None"),
    ("num_classes", 1, "an integer >= 2 or None"),
    ("num_classes", 2.5, "an integer >= 2"),
    ("num_classes", True, "an integer >= 2"),
    ("num_classes", "3", "an integer >= 2"),
    ("augmentation", "flip", "a layer or function mapping a batch of images"),
    ("input_range", 5, r"a pair \(low, high\) of finite numbers with low < high"),
    ("input_range", (1, 0), r"a pair \(low, high\)"),
    ("synthetic_pool_size", 2.5, "an integer >= 0"),
])
def test_options_of_the_wrong_type_or_value_are_refused(name, value, rule, nothing_built):
    refused(name, value, rule)


@pytest.mark.parametrize("value", ["0.9", False, 1.0, float("nan")])
def test_batchnorm_momentum_is_a_number_in_0_1(value, nothing_built):
    # This message quotes the value alone (tests/test_batchnorm.py matches it).
    with pytest.raises(ValueError, match=r"batchnorm_momentum must be a number in \[0, 1\)\. "
                                         rf"Received: {re.escape(repr(value))}$"):
        wrap(batchnorm_momentum=value)


@pytest.mark.parametrize("name", option_checks.FLAGS)
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_flags_take_only_bools(name, value, nothing_built):
    refused(name, value, "True or False")


def test_numpy_values_and_the_defaults_still_pass():
    model = wrap(seed=np.int64(3), num_classes=np.int32(3), finder_conditional=np.bool_(False),
                 finder_max_shift=np.float32(0.5), finder_hidden_dim=np.int64(8),
                 lookahead_training=np.True_, meta_batch_size=8)
    assert model.seed == 3 and type(model.seed) is int and model.num_classes == 3
    assert model.finder.conditional is False and model.finder.hidden_dim == 8
    assert model.finder.max_shift == 0.5
    model = wrap(seed=None, num_classes=None, meta_batch_size=8, finder_hidden_dim=8)
    assert model.seed is None and model.num_classes == 3  # from the generator


def test_a_pool_in_a_mode_with_a_finder_is_refused_before_the_model_is_built(nothing_built):
    with pytest.raises(ValueError, match=r"synthetic_pool_size needs a mode with synthetic "
                                         r"images and no finder.*Received: mode='mgr', "
                                         r"synthetic_pool_size=4"):
        wrap(synthetic_pool_size=4)


@pytest.mark.parametrize("name, option, options", [
    ("finder_hidden_dim", "finder_hidden_dim with finder_num_layers", {}),
    ("finder_num_layers", "finder_hidden_dim with finder_num_layers", {}),
    ("meta_batch_size", "meta_batch_size", {}),
    ("synthetic_batch_size", "synthetic_batch_size", {}),
    ("synthetic_pool_size", "synthetic_pool_size", {"mode": "pcr"}),
])
def test_sizes_that_cannot_fit_name_the_option_and_the_memory(name, option, options,
                                                              nothing_built):
    with pytest.raises(ValueError, match=rf"^{option} asks for .*: at least [\d,.e+]+ GiB, "
                                         rf"more than this machine's [\d,.]+ GiB of memory.*"
                                         rf"Received: (.*, )?{name}=1000000000000(, .*)?$"):
        wrap(**{name: 10**12}, **options)


def test_memory_bound_counts_the_bytes_an_option_asks_for(monkeypatch):
    # meta_batch_size=8 of (8, 8, 1) float32 images and int32 labels: 8 * (256 + 4) bytes.
    # The finder (5 + 3 inputs, width 8, 2 layers, 5 outputs): 189 weights, 756 bytes.
    monkeypatch.setattr(option_checks, "physical_memory", lambda: 8 * 260 - 1)
    with pytest.raises(ValueError, match=r"meta_batch_size asks for a validation buffer of 8 "
                                         r"images of shape \(8, 8, 1\).*Received: "
                                         r"meta_batch_size=8$"):
        wrap(meta_batch_size=8, finder_hidden_dim=8)
    monkeypatch.setattr(option_checks, "physical_memory", lambda: 8 * 260)
    wrap(meta_batch_size=8, finder_hidden_dim=8)
    monkeypatch.setattr(option_checks, "physical_memory", lambda: 755)
    with pytest.raises(ValueError, match=r"finder_num_layers asks for a finder of 189 weights"):
        wrap(meta_batch_size=1, finder_hidden_dim=8)


@pytest.mark.parametrize("name, value, rule", [
    ("hidden_dim", 2.5, "an integer >= 1"),
    ("num_layers", -1, "an integer >= 1"),
    ("latent_dim", "4", "an integer >= 1"),
    ("num_classes", 0, "an integer >= 1"),
    ("conditional", "false", "True or False"),
    ("max_shift", True, "> 0 and finite"),
    ("max_shift", float("inf"), "> 0 and finite"),
    ("max_shift", 0.0, "> 0 and finite"),
])
def test_finder_checks_its_arguments(name, value, rule):
    arguments = {"latent_dim": 4, "num_classes": 3}
    arguments.pop(name, None)
    refused(name, value, rule, call=Finder, **arguments)


def test_finder_config_round_trip():
    finder = Finder(latent_dim=4, num_classes=3, hidden_dim=5, num_layers=3,
                    conditional=np.bool_(False), max_shift=np.float32(0.25))
    config = finder.get_config()
    again = Finder.from_config(config)
    assert again.get_config() == config
    assert (again.hidden_dim, again.num_layers, again.conditional, again.max_shift) == (
        5, 3, False, 0.25)


@pytest.mark.parametrize("name, value, rule", [
    ("latent_dim", "five", "an integer >= 1"),
    ("latent_dim", 2.5, "an integer >= 1"),
    ("num_classes", True, "an integer >= 1"),
    ("output_range", 5, r"a pair \(low, high\)"),
    ("output_range", (0, float("nan")), r"a pair \(low, high\) of finite numbers"),
])
def test_generator_adapter_checks_its_arguments(name, value, rule):
    arguments = {"latent_dim": 5, "num_classes": 3}
    arguments.pop(name, None)
    refused(name, value, rule, call=lambda **a: GeneratorAdapter(lambda z, y: z, **a),
            **arguments)


@pytest.mark.parametrize("value", [2.5, True, 0, "2"])
def test_sample_grid_every_is_a_whole_number_of_epochs(value):
    refused("every", value, ">= 1, a whole number of epochs", call=SampleGrid)


def test_view_augmentation_flip_and_set_momentum_take_real_values():
    refused("flip", "no", "True or False", call=ViewAugmentation)
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)\. Received: '0.9'$"):
        batchnorm.set_momentum(model, "0.9")
    assert batchnorm.set_momentum(model, np.float32(0.5)) == 1
