"""mixed_float16 / mixed_bfloat16: every mode trains, logits and losses stay
float32, and loss scaling covers the meta step."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def build(mode, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), tiny.generator(), mode=mode, seed=0,
                           meta_batch_size=8, finder_hidden_dim=8, **kwargs)
    model.compile()
    return model


@pytest.mark.parametrize("mode", keras_mgr.MODES)
def test_every_mode_trains(policy, mode):
    x, y = tiny.data(16)
    model = build(mode)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert model.predict(x, verbose=0).dtype == np.float32
    if policy == "mixed_float16":
        assert hasattr(model.optimizer, "dynamic_scale")  # loss scaling is on


def meta_gradients(model, x, y, x_val, y_val):
    draws = model.draw(8)
    grads, *_ = model.meta_gradient_of(
        model.classifier_variables, [v.value for v in model.backbone.non_trainable_variables],
        model.finder.trainable_variables, x, y, draws, x_val, y_val, np.ones(8, "float32"))
    return np.concatenate([np.ravel(g.numpy()) for g in grads])


def test_loss_scaling_keeps_the_meta_gradient(policy):
    """The meta-gradient is ~eta * lambda small; without scaling its float16
    backward pass underflows. Compare with the float32 one, same weights."""
    x, y = tiny.data(8)
    x_val, y_val = tiny.data(8, seed=1)
    mixed = build("mgr")
    keras.config.set_dtype_policy("float32")
    full = build("mgr")
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(0)
    for a, b in zip(mixed.weights, full.weights):
        if "finder" in a.path:
            b.assign(b.numpy() + 0.3 * rng.standard_normal(b.shape).astype(b.dtype))
        a.assign(b.numpy())
    g_mixed = meta_gradients(mixed, x, y, x_val, y_val)
    g_full = meta_gradients(full, x, y, x_val, y_val)
    assert np.linalg.norm(g_full) > 0
    cosine = g_mixed @ g_full / (np.linalg.norm(g_mixed) * np.linalg.norm(g_full))
    assert cosine > (0.99 if policy == "mixed_float16" else 0.9), cosine
