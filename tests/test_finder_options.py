"""The finder's trust region and the held-out validation source of the meta step."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr import Finder, meta


def build(mode="mgr", seed=0, **kwargs):
    return tiny.wrapped(mode, seed=seed, optimizer=keras.optimizers.Adam(1e-2), **kwargs)


# Trust region ---------------------------------------------------------------
def test_max_shift_scales_long_residuals_and_keeps_short_ones():
    finder = Finder(latent_dim=2, num_classes=1, hidden_dim=3, num_layers=1,
                    conditional=False, max_shift=1.0)
    finder.hidden[0].kernel.assign(np.zeros((2, 3)))
    finder.hidden[0].bias.assign(np.zeros(3))
    z = np.array([[1.0, 2.0]], "float32")
    labels = np.zeros((1,), "int32")
    finder.out.bias.assign([3.0, 4.0])  # residual (3, 4): norm 5 -> scaled to 1
    np.testing.assert_allclose(tiny.numpy(finder([z, labels])), [[1.6, 2.8]], rtol=1e-6)
    finder.out.bias.assign([0.3, 0.4])  # norm 0.5 <= 1: unchanged
    np.testing.assert_allclose(tiny.numpy(finder([z, labels])), [[1.3, 2.4]], rtol=1e-6)


def test_max_shift_bounds_every_latent_and_starts_at_identity():
    model = build(finder_max_shift=0.25)
    draws = model.objective.draw(16)
    z = tiny.numpy(draws["z"])
    phi = [v.value for v in model.finder.trainable_variables]
    found, _ = model.finder.stateless_call(phi, [], [z, draws["labels"]])
    np.testing.assert_array_equal(tiny.numpy(found), z)  # zero-initialised residual
    rng = np.random.default_rng(0)
    for v in model.finder.trainable_variables:
        v.assign(np.array(v) + rng.standard_normal(v.shape))
    shift = np.linalg.norm(tiny.numpy(model.finder([z, draws["labels"]])) - z, axis=1)
    assert shift.max() == pytest.approx(0.25, rel=1e-5)  # the bound is reached
    assert np.all(shift <= 0.25 * (1 + 1e-5))
    x, y = tiny.data(24)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert max(history.history["latent_shift"]) <= 0.25 * (1 + 1e-5)


def test_max_shift_is_saved_and_checked(tmp_path):
    model = build(finder_max_shift=2.0)
    assert Finder.from_config(model.finder.get_config()).max_shift == 2.0
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").finder.max_shift == 2.0
    with pytest.raises(ValueError, match="max_shift must be > 0.*-1"):
        build(finder_max_shift=-1)


# Held-out validation data ---------------------------------------------------
def test_holdout_smaller_than_meta_batch_is_used_whole():
    x_val, y_val = tiny.data(5, seed=3)
    model = build(meta_validation_data=(x_val, y_val))
    images, labels, weights = model.validation.batch()
    np.testing.assert_array_equal(np.array(images), x_val)
    np.testing.assert_array_equal(np.array(labels), y_val)
    np.testing.assert_array_equal(np.array(weights), np.ones(5))


def test_holdout_larger_than_meta_batch_is_sampled_without_replacement():
    x_val, y_val = tiny.data(30, seed=3)
    # Rows identify examples, inside the generator's range [-1, 1].
    x_val = np.linspace(-0.9, 0.9, 30)[:, None, None, None] + 0.05 * x_val
    model = build(meta_validation_data=(x_val, np.eye(3)[y_val]))  # one-hot accepted
    seen = set()
    for _ in range(5):
        images, labels, _ = model.validation.batch()
        rows = [int(np.argmin(np.abs(x_val.reshape(30, -1) - i.reshape(1, -1)).sum(1)))
                for i in np.array(images)]
        assert len(rows) == 8 and len(set(rows)) == 8
        np.testing.assert_array_equal(np.array(labels), y_val[rows])
        seen |= set(rows)
    assert len(seen) > 8  # a new draw each meta step


def test_holdout_feeds_the_meta_step_from_the_first_step():
    x, y = tiny.data(8)
    x_val, y_val = tiny.data(6, seed=3)
    model = build(meta_validation_data=(x_val, y_val))
    reference = build(meta_validation_data=(x_val, y_val))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # The finder steps at step 1 already (no buffer to fill), and the
    # buffer of training batches stays empty.
    assert np.array(model.finder_optimizer.iterations) == 1
    assert np.array(model.validation.count) == 0
    # Its step is the one the meta-gradient on the held-out batch gives.
    state = [v.value for v in reference.backbone.non_trainable_variables]
    phi = reference.finder.trainable_variables
    grads, *_ = reference.objective.meta_step_gradients(
        reference.classifier_variables, state, phi, x, y, reference.objective.draw(8), x_val, y_val,
        np.ones(6))
    assert np.sqrt(sum(np.sum(np.array(g) ** 2) for g in grads)) > 0
    reference.finder_optimizer.apply(grads, phi)
    for a, b in zip(model.finder.weights, reference.finder.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)


def test_holdout_is_saved_with_the_weights(tmp_path):
    x_val, y_val = tiny.data(5, seed=3)
    model = build(meta_validation_data=(x_val, y_val))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.meta_holdout_size == 5
    np.testing.assert_array_equal(np.array(loaded.validation.holdout_images), x_val)
    np.testing.assert_array_equal(np.array(loaded.validation.holdout_labels), y_val)


@pytest.mark.parametrize("kwargs, data, message", [
    ({"mode": "pcr"}, "ok", "only modes 'metagda' and 'mgr'.*mode='pcr'"),
    ({}, "bad_shape", r"shape \(n,\) \+ \(8, 8, 1\).*\(4, 8, 8, 3\)"),
    ({}, "empty", r"empty.*\(0, 8, 8, 1\)"),
    ({}, "mismatch", "4 images but 3 labels"),
    ({}, "range", r"class ids in \[0, 3\).*\[0, 5\]"),
    ({}, "nan", "NaN"),
    ({}, "not_pair", "tuple \\(images, labels\\).*ndarray"),
    ({}, "0..255", r"value range \[-1, 1\] \(5% slack\).*Received: meta_validation_data "
                   r"images with values in \[\d+\.?\d*, 2\d\d\.?\d*\]$"),
])
def test_holdout_bad_input_is_quoted(kwargs, data, message):
    x, y = tiny.data(4, seed=3)
    data = {
        "ok": (x, y),
        "bad_shape": (np.zeros((4, 8, 8, 3)), y),
        "empty": (x[:0], y[:0]),
        "mismatch": (x, y[:3]),
        "range": (x, np.array([0, 1, 2, 5])),
        "nan": (np.where(np.arange(4)[:, None, None, None] == 1, np.nan, x), y),
        "not_pair": x,
        "0..255": ((x + 1) * 127.5, y),
    }[data]
    with pytest.raises(ValueError, match=message):
        build(meta_validation_data=data, **kwargs)


# "auto" defaults -------------------------------------------------------------
@pytest.mark.parametrize("mode, expected", [
    ("mgr", (5, 1e-2, None, "auto")),
    ("metagda", (1, 1e-3, 0.5, 1)),
])
def test_auto_finder_settings_follow_the_mode(mode, expected):
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), num_classes=3, mode=mode)
    assert (model.meta_every, model.finder_learning_rate, model.finder.max_shift,
            model.meta_microbatches) == expected
    assert keras_mgr.wrap.__module__ == "keras_mgr.wrapping"
    from keras_mgr.wrapping import FINDER_DEFAULTS

    assert tuple(FINDER_DEFAULTS[mode].values()) == expected
    # The names the docs cite.
    assert keras_mgr.wrap.FINDER_DEFAULTS is FINDER_DEFAULTS
    assert keras_mgr.FINDER_DEFAULTS is FINDER_DEFAULTS
    model.compile()
    assert float(model.finder_optimizer.learning_rate) == pytest.approx(expected[1])
    # Explicit values win, None included.
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), num_classes=3, mode=mode,
                           meta_every=3, finder_learning_rate=0.5, finder_max_shift=None,
                           meta_microbatches=2)
    assert (model.meta_every, model.finder_learning_rate, model.finder.max_shift,
            model.meta_microbatches) == (3, 0.5, None, 2)


def test_meta_metrics_keep_their_value_in_an_epoch_without_a_meta_step():
    # 4 steps per epoch, meta steps at 0, 5, 10, 15, 20: epoch 5 (steps 16-19) has none.
    x, y = tiny.data(32)
    model = build(meta_every=5)
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0, shuffle=False).history
    for name in ("meta_loss", "meta_grad_norm"):
        assert history[name][3] > 0
        assert history[name][4] == history[name][3]
        assert history[name][5] != history[name][4]


@pytest.mark.parametrize("mode", ["pcr", "mgr"])
def test_a_smaller_last_batch_keeps_the_full_synthetic_batch(mode):
    x, y = tiny.data(10)  # batches of 8 and 2
    model = build(mode, meta_every=1)
    sizes = []
    draw = model.objective.draw
    model.objective.draw = lambda n: sizes.append(n) or draw(n)
    model.run_eagerly = True
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert sizes == [8, 8]
    sizes.clear()
    import tensorflow as tf

    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    assert sizes == [4, 4, 4]  # batches 4, 4, 2


# Random-drift control ------------------------------------------------------
def _flat(tensors):
    return np.concatenate([np.ravel(keras.ops.convert_to_numpy(t)) for t in tensors])


def test_random_drift_direction_has_the_meta_gradient_norm_and_no_signal():
    model = build(meta_gradient="random_drift")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(v.shape).astype("float32")
             for v in model.finder.trainable_variables]
    first = _flat(meta.random_direction(grads, model.sampler.seed_state))
    again = _flat(meta.random_direction(grads, model.sampler.seed_state))
    g = _flat(grads)
    np.testing.assert_allclose(np.linalg.norm(first), np.linalg.norm(g), rtol=1e-5)
    np.testing.assert_array_equal(first, again)  # a pure function of the stream's state
    assert abs(first @ g) / np.linalg.norm(g) ** 2 < 0.2  # unrelated to the gradient
    model.objective.draw(4)  # the stream advances with every step's draws: a new direction
    turned = _flat(meta.random_direction(grads, model.sampler.seed_state))
    assert abs(turned @ first) / np.linalg.norm(g) ** 2 < 0.2


def test_random_drift_moves_the_finder_like_mgr_without_its_direction():
    x, y = tiny.data(24)
    finders, streams, shifts = {}, {}, {}
    for meta_gradient in ("second_order", "random_drift"):
        model = build(meta_gradient=meta_gradient, meta_every=1, finder_learning_rate=1e-2)
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        finders[meta_gradient] = _flat(model.finder.trainable_variables)
        streams[meta_gradient] = np.array(model.sampler.seed_state)
        shifts[meta_gradient] = history.history["latent_shift"][-1]
    # Both finders moved (Adam steps of ~lr), by comparable amounts, differently.
    assert shifts["second_order"] > 0.01 and shifts["random_drift"] > 0.01
    assert 0.2 < shifts["random_drift"] / shifts["second_order"] < 5.0
    assert not np.allclose(finders["second_order"], finders["random_drift"])
    # The control never advanced the synthetic stream: the same draws as mgr.
    np.testing.assert_array_equal(streams["second_order"], streams["random_drift"])


# Meta-gradient accumulation -------------------------------------------------
def test_meta_accumulation_steps_on_the_mean_of_k_meta_gradients():
    """k = 2: the first meta-gradient g1 only accumulates; on the second the
    finder steps on (g1 + g2) / 2. g2 is measured on a twin without
    accumulation, started from the same state (SGD(1): the step is -g)."""
    x, y = tiny.data(8)

    def build_twin(k):
        model = tiny.wrapped("mgr", meta_every=1, meta_accumulation=k,
                             compile={"finder_optimizer": keras.optimizers.SGD(1.0)})
        return model

    accumulating = build_twin(2)
    phi = accumulating.finder.trainable_variables
    phi0 = [np.array(v) for v in phi]
    # Step 0 fills the validation buffer (no meta update); step 1 accumulates g1.
    accumulating.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(np.array(accumulating.meta_accumulator.count)) == 1
    for v, p in zip(phi, phi0):
        np.testing.assert_array_equal(np.array(v), p)  # no finder step yet
    g1 = [np.array(s) for s in accumulating.meta_accumulator.sums]
    assert max(np.abs(g).max() for g in g1) > 0

    twin = build_twin(1)
    twin.set_weights([w for w, v in zip(accumulating.get_weights(), accumulating.weights)
                      if "meta_accumulator" not in v.path])
    for a, b in zip(twin.optimizer.variables, accumulating.optimizer.variables):
        a.assign(np.array(b))
    for a, b in zip(twin.finder_optimizer.variables, accumulating.finder_optimizer.variables):
        a.assign(np.array(b))
    accumulating.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, shuffle=False, verbose=0)
    twin.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, shuffle=False, verbose=0)
    assert int(np.array(accumulating.meta_accumulator.count)) == 0  # the window restarted
    for v, t, p, g in zip(phi, twin.finder.trainable_variables, phi0, g1):
        g2 = p - np.array(t)
        np.testing.assert_allclose(np.array(v), p - (g + g2) / 2, rtol=1e-5, atol=1e-9)


def test_meta_accumulation_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="meta_accumulation"):
        tiny.wrapped("mgr", meta_accumulation=0)
    with pytest.warns(UserWarning, match="meta_accumulation"):
        tiny.wrapped("pcr", meta_accumulation=4)
    model = tiny.wrapped("mgr", meta_accumulation=4)
    model.save(tmp_path / "m.keras")
    loaded = keras_mgr.load_model(tmp_path / "m.keras")
    assert loaded.meta_accumulation == 4 and loaded.meta_accumulator.steps == 4
