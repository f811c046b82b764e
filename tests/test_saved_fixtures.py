"""`.keras` files saved by an earlier release (tests/fixtures, made by
make_saved_models.py before the issue-11 refactoring) still load: same
weights, same predictions, both optimizers' states, and training resumes."""

import os

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
