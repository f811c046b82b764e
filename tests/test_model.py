"""MGRModel: training behaviour of every mode, statelessness, XLA parity."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr

MODES = keras_mgr.MODES


def build(mode="mgr", norm=None, seed=0, jit_compile=False, optimizer=None, **kwargs):
    return tiny.wrapped(mode, norm, seed, optimizer=optimizer or keras.optimizers.Adam(1e-2),
                        compile={"jit_compile": jit_compile}, **{"meta_every": 1, **kwargs})


# metagda is slow here: mgr runs the same finder path, and metagda's fit,
# save and predict run fast in test_saving's round trip.
@pytest.mark.parametrize("mode", [pytest.param(m, marks=[pytest.mark.slow] * (m == "metagda"))
                                  for m in MODES])
def test_fit_evaluate_predict_numpy_and_tf_data(mode):
    x, y = tiny.data(24)
    model = build(mode)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    expected = {"loss", "ce_loss", "accuracy"}
    expected |= {"pcr_loss"} if mode in ("pcr", "mgr") else set()
    expected |= {"gda_loss"} if mode in ("gda", "metagda") else set()
    expected |= ({"meta_loss", "meta_grad_norm", "latent_shift"} if mode in ("metagda", "mgr")
                 else set())
    assert set(history.history) == expected
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(dataset, epochs=1, verbose=0)
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    assert model.predict(x, verbose=0).shape == (24, 3)
    assert model.predict(dataset, verbose=0).shape == (24, 3)


@pytest.mark.parametrize("mode", MODES)
def test_training_loss_decreases(mode):
    x, y = tiny.data(48)
    model = build(mode, norm="keras")
    history = model.fit(x, y, batch_size=16, epochs=12, verbose=0).history
    assert history["ce_loss"][-1] < 0.8 * history["ce_loss"][0], history["ce_loss"]
    assert history["loss"][-1] < history["loss"][0]


def test_one_hot_labels_train_like_class_ids():
    x, y = tiny.data(16)
    a = build("mgr").fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    b = build("mgr").fit(x, np.eye(3)[y], batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


# gda, pcr and metagda run in `make test-slow`: mgr compiles the same terms and
# the finder's meta step.
@pytest.mark.parametrize("mode", [pytest.param(
    m, marks=[pytest.mark.slow] * (m in ("gda", "pcr", "metagda"))) for m in MODES])
@pytest.mark.compiled("jit_compile=True")
def test_jit_compile_matches_graph(mode):
    x, y = tiny.data(8)
    weights = []
    for jit in (False, True):
        # SGD: Adam turns the ~1e-9 rounding noise on the conv bias before BN
        # (whose true gradient is 0) into full-size steps of random sign.
        model = build(mode, norm="keras", jit_compile=jit,
                      optimizer=keras.optimizers.SGD(0.1))
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        weights.append([v.numpy() for v in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.tensorflow_only("calls train_step(data), the TensorFlow step's signature")
def test_meta_step_is_fused_and_leaves_bn_to_real_batch():
    """The lookahead assigns nothing: after one meta step the classifier equals
    a plain step on the same loss, and BN statistics move by the real batch
    alone (not the synthetic views, not the lookahead's validation pass)."""
    x, y = tiny.data(8)
    x_val, y_val = tiny.data(8, seed=1)
    # SGD: Adam would turn the rounding noise on the conv bias before BN (true
    # gradient 0; the meta step's regularizer pass is unfused, the plain
    # step's fused) into steps of random sign.
    meta_model, plain_model = (build("mgr", norm="keras", optimizer=keras.optimizers.SGD(0.1))
                               for _ in "ab")
    for model in (meta_model, plain_model):
        model.validation.remember(x_val, y_val, True)  # the validation buffer
    backbone = meta_model.backbone
    _, expected_state = backbone.stateless_call(
        backbone.trainable_variables, backbone.non_trainable_variables, x, training=True)
    meta_model.meta_train_step((x, y))
    plain_model.train_step((x, y))
    for a, b in zip(meta_model.classifier_variables, plain_model.classifier_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for variable, expected in zip(backbone.non_trainable_variables, expected_state):
        np.testing.assert_allclose(variable.numpy(), expected.numpy(), rtol=1e-6)
    moved = [not np.allclose(v.numpy(), w.numpy()) for v, w in zip(
        meta_model.finder.trainable_variables, plain_model.finder.trainable_variables)]
    assert any(moved)


@pytest.mark.tensorflow_only("differentiates with tf.GradientTape")
def test_pcr_gradient_never_reaches_head_but_gda_does():
    x, y = tiny.data(8)
    for mode, head_moves in (("pcr", False), ("gda", True)):
        model = build(mode)
        theta = [v.value for v in model.classifier_variables]
        state = [v.value for v in model.backbone.non_trainable_variables]
        draws = model.objective.draw(8)
        with tf.GradientTape() as tape:
            images = model.synthesis([], draws)
            synthetic, _ = model.term(theta, state, images, draws)
        head, backbone = tape.gradient(
            synthetic, [theta[len(model.backbone.trainable_variables):], theta[:1]],
            unconnected_gradients="zero")
        head_norm = sum(float(tf.reduce_sum(g**2)) for g in head)
        assert (head_norm > 0) == head_moves, (mode, head_norm)
        assert float(tf.reduce_sum(backbone[0] ** 2)) > 0


def test_fresh_finder_gives_uniform_latents():
    model = build("mgr")
    draws = model.objective.draw(6)
    finder_images = model.synthesis([v.value for v in model.finder.trainable_variables],
                                     draws)
    uniform_images = model.generator([draws["z"], draws["labels"]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(finder_images),
                                  keras.ops.convert_to_numpy(uniform_images))


def test_meta_every_schedules_on_the_host():
    x, y = tiny.data(32)
    model = build("mgr", meta_every=2)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # Meta steps at steps 0 and 2 of 4; step 0 skips the finder update (the
    # validation buffer of previous batches is still empty).
    assert model.finder_optimizer.iterations.numpy() == 1


@pytest.mark.parametrize("mode", ["pcr", "mgr"])
def test_synthetic_batch_size_option(mode):
    """The step generates `synthetic_batch_size` images, whatever the real
    batch (8, then a last batch of 4): a spy records every generator call."""
    model = build(mode, synthetic_batch_size=5)
    generator, calls = model.generator, []

    def spy(inputs, training=False):
        calls.append((tuple(inputs[0].shape), tuple(inputs[1].shape)))
        return generator(inputs, training=training)

    model.synthesis.generator = lambda: spy
    model.run_eagerly = True  # one call per step, with concrete shapes
    x, y = tiny.data(20)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(calls) >= 3 and set(calls) == {((5, 5), (5,))}, calls


def test_save_and_load_round_trip(tmp_path):
    x, y = tiny.data(16)
    model = build("mgr", norm="keras")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert loaded.mode == "mgr" and loaded.generator.trainable is False
    assert loaded.finder_optimizer.iterations.numpy() == 1  # step 1: buffer empty
    for a, b in zip(loaded.finder.weights, model.finder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_synthetic_pool_for_gda_and_pcr():
    model = build("pcr", synthetic_pool_size=20)
    draws = model.objective.draw(6)
    images = np.asarray(model.synthesis([], draws))
    pool = np.asarray(model.synthesis.pool[0])
    for image, index, label in zip(images, np.asarray(draws["pool_index"]), draws["labels"]):
        np.testing.assert_array_equal(image, pool[index])
        assert label == model.synthesis.pool[1].numpy()[index]
    assert sorted(np.bincount(model.synthesis.pool[1].numpy())) == [6, 7, 7]
    x, y = tiny.data(16)
    assert np.isfinite(model.fit(x, y, batch_size=8, verbose=0).history["pcr_loss"][-1])
    with pytest.raises(ValueError, match="synthetic_pool_size needs.*'mgr'"):
        build("mgr", synthetic_pool_size=20)


@pytest.mark.parametrize("mode, finder, simsiam", [
    ("base", False, False), ("gda", False, False), ("pcr", False, True),
    ("metagda", True, False), pytest.param("mgr", True, True, marks=pytest.mark.tensorflow_only(
        "SimSiam in the exact meta step"))])
def test_each_mode_builds_only_the_parts_it_uses(mode, finder, simsiam):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consistency is ignored by some modes
        model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), mode=mode,
                               consistency="simsiam")
    model.compile()
    assert (model.finder is not None) == finder
    assert (model.finder_optimizer is not None) == finder
    assert (model.regularizer is not None) == simsiam  # the PCR modes
    assert model.value_range == (-1.0, 1.0)  # the generator's, held by the model
    # tiny backbone conv (2) + head (2), plus SimSiam's heads where PCR runs.
    extra = len(model.regularizer.trainable_weights) if simsiam else 0
    assert (extra > 0) == simsiam
    assert not any("view_augmentation" in v.path for v in model.weights) or simsiam
    assert len(model.trainable_weights) == 4 + extra + (
        len(model.finder.trainable_weights) if finder else 0)
