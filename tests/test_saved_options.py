"""Every `MGRModel` option is saved: `saving.OPTIONS` lists exactly the
constructor's arguments (less its parts), and a model with each option away
from its default comes back from a `.keras` file with the same values."""

import inspect
import warnings

import numpy as np
import tiny
from test_generator_protocol import MappedGenerator

import keras_mgr
from keras_mgr import saving


def _constructor_defaults():
    parameters = inspect.signature(keras_mgr.MGRModel.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name not in (
        "self", "kwargs") + saving.PARTS}


def test_options_are_the_constructor_arguments():
    assert set(saving.OPTIONS) == set(_constructor_defaults())


def _round_trip(model, path, generator):
    model.compile()
    model.save(path)
    return keras_mgr.load_model(path, generator=generator)


def test_every_option_away_from_its_default_round_trips(tmp_path):
    defaults = _constructor_defaults()
    x_val, y_val = tiny.data(6, seed=1)
    mapped = MappedGenerator()  # latent_space="w" needs a mapping network
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options metagda does not read
        finder_model = keras_mgr.wrap(
            tiny.backbone(), mapped, num_classes=3, mode="metagda", pcr_weight=2.0,
            gda_weight=0.5, meta_every=3, meta_gradient="finite_difference",
            finder_learning_rate=0.02, synthetic_batch_size=4, meta_batch_size=6,
            lookahead_training=False, finite_difference_epsilon=0.02, latent_space="w",
            meta_validation_data=(x_val, y_val), checkpoint_generator=False, seed=3,
            meta_microbatches=2, fused_batchnorm=False, finder_hidden_dim=8,
            meta_accumulation=2)
    pool_model = keras_mgr.wrap(tiny.backbone(), tiny.generator(output_range=(-2.0, 2.0)),
                                mode="pcr", synthetic_pool_size=12, seed=3)
    covered = set()
    for model, generator in ((finder_model, mapped), (pool_model, None)):
        loaded = _round_trip(model, str(tmp_path / f"{model.mode}.keras"), generator)
        for name in defaults:  # the constructor's, not saving's own list
            expected = getattr(model, name)
            assert getattr(loaded, name) == expected, name
            default = defaults[name]
            if default is inspect.Parameter.empty or np.all(expected != default):
                covered.add(name)
    assert covered == set(defaults)
