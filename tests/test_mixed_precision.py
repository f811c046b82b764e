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
    return tiny.wrapped(mode, "keras", **kwargs)


def test_meta_microbatches_train(policy):
    """The micro-batches' loop carries float32 sums under either policy."""
    x, y = tiny.data(24)
    model = build("mgr", meta_every=1, meta_microbatches=2)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert history["meta_grad_norm"][-1] > 0


@pytest.mark.parametrize("mode", keras_mgr.MODES)
def test_every_mode_trains(policy, mode):
    """Three steps of 8; in the finder modes each is a meta step, and the
    finder updates on the last two (after the first fills the buffer of 8)."""
    finder_mode = mode in ("metagda", "mgr")
    x, y = tiny.data(24)
    model = build(mode, **({"meta_every": 1} if finder_mode else {}))
    finder = [v.numpy() for v in model.finder.weights] if finder_mode else []
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert model.predict(x, verbose=0).dtype == np.float32
    if policy == "mixed_float16":
        assert hasattr(model.optimizer, "dynamic_scale")  # loss scaling is on
    assert (model.finder_optimizer is not None) == finder_mode
    if finder_mode:
        assert model.finder_optimizer.iterations.numpy() == 2
        assert any(not np.allclose(a.numpy(), b)
                   for a, b in zip(model.finder.weights, finder))


def meta_gradients(model, x, y, x_val, y_val):
    draws = model.objective.draw(8)
    grads, *_ = model.objective.meta_step_gradients(
        model.classifier_variables, [v.value for v in model.backbone.non_trainable_variables],
        model.finder.trainable_variables, x, y, draws, x_val, y_val, np.ones(8, "float32"))
    return np.concatenate([np.ravel(np.asarray(g)) for g in grads])


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
