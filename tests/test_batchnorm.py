"""BatchNorm on small data: wrap(batchnorm_momentum=...) and the unconverged warning."""

import warnings

import keras
import numpy as np
import pytest
import tiny
from keras import layers

import keras_mgr
from keras_mgr import batchnorm


def keras_cnn(momentum=None):
    """A standard Keras CNN; BatchNormalization() with Keras's default 0.99."""
    kwargs = {} if momentum is None else {"momentum": momentum}
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(4, 3, padding="same")(inputs)
    h = layers.BatchNormalization(name="bn_a", **kwargs)(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(4, 3, padding="same")(h)
    h = layers.BatchNormalization(name="bn_b", **kwargs)(h)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(h))


def fit(model, steps):
    x, y = tiny.data(8 * steps)
    model.compile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return [str(w.message) for w in caught if "BatchNormalization" in str(w.message)]


def test_default_momentum_after_few_steps_warns_with_layers_steps_and_fix():
    model = keras_mgr.wrap(keras_cnn(), tiny.generator(), mode="base", seed=0)
    messages = fit(model, steps=20)
    assert len(messages) == 1
    # 0.99^20 = 0.818: 82% of the initial statistics are left.
    assert "After 20 training steps, 2 BatchNormalization layer(s)" in messages[0]
    assert "bn_a (momentum 0.99, 82% left)" in messages[0] and "bn_b" in messages[0]
    # The fix converges in these 20 steps: 0.01 ** (1 / 20) = 0.794 -> 0.79.
    assert "wrap(..., batchnorm_momentum=0.79) (0.79^20 < 1%)" in messages[0]


def test_batchnorm_momentum_sets_every_layer_and_converged_runs_stay_quiet():
    model = keras_mgr.wrap(keras_cnn(), tiny.generator(), mode="base", seed=0,
                           batchnorm_momentum=0.9)
    assert [layer.momentum for layer in batchnorm.batchnorm_layers(model.backbone)] == [
        0.9, 0.9]
    assert fit(model, steps=50) == []  # 0.9^50 = 0.005 < 1%
    restored = keras_mgr.MGRModel.from_config(model.get_config())
    assert {layer.momentum for layer in batchnorm.batchnorm_layers(restored.backbone)} == {
        0.9}


def test_unconverged_by_hand():
    model = keras_cnn(momentum=0.95)
    assert batchnorm.unconverged(model, 10) == [("bn_a", 0.95, 0.95**10),
                                                 ("bn_b", 0.95, 0.95**10)]
    assert batchnorm.unconverged(model, 100) == []  # 0.95^100 = 0.006
    assert batchnorm.unconverged(tiny.backbone(), 1) == []  # no BatchNorm at all


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_momentum_out_of_range(momentum):
    with pytest.raises(ValueError, match=rf"in \[0, 1\). Received: {momentum}"):
        keras_mgr.wrap(keras_cnn(), tiny.generator(), mode="base",
                       batchnorm_momentum=momentum)


def test_nested_backbone_layers_are_found():
    inner = keras_cnn()
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, inner(inputs))
    assert batchnorm.set_momentum(outer, 0.8) == 2
    assert np.allclose([layer.momentum for layer in inner.layers
                        if isinstance(layer, layers.BatchNormalization)], 0.8)
