"""The package's layers against one contract, as keras-hub's `run_layer_test` checks
its layers: built from its config it is the same layer (same weights and
output), it survives Keras serialization by its registered name, its output
has the shape and dtype it declares, and under a `mixed_bfloat16` policy it
computes in bfloat16 where it computes at all."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mgr import Finder, MGRRegularizer, SyntheticSampler, ViewAugmentation
from keras_mgr.layers import ExactBatchNormalization

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, (4, 8, 8, 1)).astype("float32")
LATENTS = RNG.normal(size=(4, 5)).astype("float32")
LABELS = np.array([0, 1, 2, 0], "int32")


def _finder():
    return Finder(5, 3, hidden_dim=8, num_layers=2, conditional=True, max_shift=0.5,
                  name="finder")


# name: (a fresh layer, its input (a dict: keyword arguments), whether its output
# is deterministic)
CASES = {
    "Finder": (_finder, [LATENTS, LABELS], True),
    "MGRRegularizer": (lambda: MGRRegularizer("simsiam", projection_dim=8, prediction_dim=4,
                                              seed=1), RNG.normal(size=(8, 6)).astype(
                                                  "float32"), True),
    "ViewAugmentation": (lambda: ViewAugmentation(value_range=(-1.0, 1.0), seed=3), IMAGES,
                         False),
    "SyntheticSampler": (lambda: SyntheticSampler(5, 3, seed=2), {"batch_size": 4}, False),
    "ExactBatchNormalization": (lambda: ExactBatchNormalization(momentum=0.9), IMAGES, True),
}


def _call(layer, inputs):
    return layer(**inputs) if isinstance(inputs, dict) else layer(inputs)


def _numpy(outputs):
    return [ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


@pytest.mark.parametrize("name", list(CASES))
def test_config_round_trip_gives_the_same_layer(name):
    make, inputs, deterministic = CASES[name]
    layer = make()
    _call(layer, inputs)
    # Weights away from their initial values (the finder's last layer starts at
    # zero, where a lost max_shift would not show); positive for BatchNorm's variance.
    layer.set_weights([np.abs(RNG.normal(size=w.shape)).astype(w.dtype) + 0.5
                       if w.dtype.kind == "f" else w for w in layer.get_weights()])
    outputs = _call(layer, inputs)
    config = layer.get_config()
    twin = type(layer).from_config(config)
    twin_outputs = _call(twin, inputs)  # builds it
    assert twin.get_config() == config
    for a, b in zip(layer.get_weights(), twin.get_weights()):
        assert a.shape == b.shape and a.dtype == b.dtype
    twin.set_weights(layer.get_weights())
    if deterministic:
        for a, b in zip(_numpy(_call(layer, inputs)), _numpy(_call(twin, inputs))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    else:  # seeded streams: same draws from the same state
        for a, b in zip(_numpy(outputs), _numpy(twin_outputs)):
            assert a.shape == b.shape


@pytest.mark.parametrize("name", list(CASES))
def test_serialized_by_its_registered_name(name):
    make, inputs, _ = CASES[name]
    layer = make()
    _call(layer, inputs)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] in (f"keras_mgr>{name}", name)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()


@pytest.mark.parametrize("name", list(CASES))
def test_output_shape_and_dtype(name):
    make, inputs, _ = CASES[name]
    layer = make()
    outputs = keras.tree.flatten(_call(layer, inputs))
    if hasattr(layer, "compute_output_shape") and name != "SyntheticSampler":
        declared = layer.compute_output_shape(keras.tree.map_structure(
            lambda x: tuple(x.shape), inputs))
        assert tuple(outputs[0].shape) == tuple(declared)
    floats = [o for o in outputs if "float" in str(o.dtype)]
    assert floats and all(keras.backend.standardize_dtype(o.dtype) == "float32"
                          for o in floats)


@pytest.mark.parametrize("name", ["Finder", "ViewAugmentation", "ExactBatchNormalization"])
def test_mixed_bfloat16_computes_in_bfloat16(name):
    make, inputs, _ = CASES[name]
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = make()
        (output,) = keras.tree.flatten(layer(keras.tree.map_structure(
            lambda x: ops.cast(x, "bfloat16") if x.dtype == np.float32 else x, inputs)))
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights
               if "float" in str(w.dtype))
