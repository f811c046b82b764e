"""`.keras` files saved by earlier releases (tests/fixtures, made by
make_saved_models.py, which names each file's release) still load: same
weights, same predictions, both optimizers' states, and training resumes."""

import os
import re

import numpy as np
import pytest
import tiny

import keras_mgr

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.parametrize("name", ["mgr_holdout", "pcr_pool"])
def test_release_file_loads(name):
    expected = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    model = keras_mgr.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    weights = model.get_weights()
    stored = sorted(k for k in expected.files if k.startswith("w"))
    assert len(weights) == len(stored)
    for key, value in zip(stored, weights):
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    x, y = tiny.data(24)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["predictions"],
                               rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 3
    if name == "mgr_holdout":  # the finder's optimizer and the held-out set came back
        assert int(model.finder_optimizer.iterations.numpy()) == 3
        assert model.meta_microbatches == 1  # saved before the option: the pass it ran
        np.testing.assert_array_equal(model.validation.holdout_labels.numpy(), y[:6])
    else:
        assert model.synthesis.pool[0].shape[0] == 12
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6


def test_a_mode_without_pcr_loads_without_the_regularizer_its_release_saved():
    """Releases that built the PCR regularizer in every mode saved one with a
    gda model, and kept the generator's value range in it: the model loads
    without it, keeps every other weight and takes the range over."""
    expected = np.load(os.path.join(FIXTURES, "gda_regularizer.npz"))
    model = keras_mgr.load_model(os.path.join(FIXTURES, "gda_regularizer.keras"))
    assert model.regularizer is None and model.value_range == (-2.0, 2.0)
    saved = list(zip(expected["paths"], (expected[k] for k in sorted(
        k for k in expected.files if k.startswith("w")))))
    dropped = [p for p, _ in saved if p.startswith("view_augmentation")]
    assert dropped == ["view_augmentation/seed_state"]  # the regularizer's, not loaded
    kept = [(p, w) for p, w in saved if p not in dropped]
    weights = model.get_weights()
    assert len(weights) == len(kept)
    for variable, value, (path, stored) in zip(model.weights, weights, kept):
        # Paths of layers named automatically carry a counter (`_2`) in this process.
        assert re.sub(r"_\d+/", "/", variable.path) == path
        np.testing.assert_array_equal(value, stored, err_msg=path)
    x, y = tiny.data(24)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["predictions"],
                               rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 3
    model.fit(x * 1.5, y, batch_size=8, epochs=1, verbose=0)  # in (-2, 2), not (-1, 1)
    assert int(model.optimizer.iterations.numpy()) == 6
    with pytest.raises(ValueError, match=r"value range \[-2, 2\]"):
        model.fit(x * 3.0, y, batch_size=8, epochs=1, verbose=0)
