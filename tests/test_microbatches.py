"""`meta_microbatches`: the exact meta step over slices of the synthetic batch."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

K = (1, 2, 4)


def _model(k, consistency="l2", norm=None, synthetic=8):
    model = tiny.wrapped("mgr", norm=norm, consistency=consistency,
                         synthetic_batch_size=synthetic, meta_microbatches=k,
                         optimizer=keras.optimizers.SGD(0.5))
    rng = np.random.default_rng(1)
    for v in model.finder.trainable_variables:  # leave the identity init
        v.assign(v.numpy() + 0.3 * rng.standard_normal(v.shape))
    x, y = tiny.data(12, seed=3)
    state = [v.value for v in model.backbone.non_trainable_variables]
    draws = model.objective.draw(synthetic)
    return lambda: model.objective.meta_step_gradients(
        model.classifier_variables, state, model.finder.trainable_variables, x[:6], y[:6],
        draws, x[6:], y[6:], np.ones(6, "float32"))


def _meta_step(k, consistency, norm=None, synthetic=8):
    meta_grads, inner, loss_val, total, aux = _model(k, consistency, norm, synthetic)()
    return [np.asarray(g) for g in meta_grads], [np.asarray(g) for g in inner], aux, total


@pytest.mark.parametrize("consistency", ["l2", pytest.param(
    "simsiam", marks=pytest.mark.tensorflow_only("SimSiam in the exact meta step"))])
def test_slices_give_the_full_batch_meta_step_without_batchnorm(consistency):
    """Without BatchNorm R is a mean over samples, so k slices sum to the same
    meta-gradient, inner gradient (SimSiam heads included) and logged terms."""
    runs = [_meta_step(k, consistency) for k in K]
    meta_full, inner_full, aux_full, total_full = runs[0]
    assert max(np.abs(g).max() for g in meta_full) > 1e-7  # a real meta-gradient
    for meta_k, inner_k, aux_k, total_k in runs[1:]:
        for a, b in zip(meta_k, meta_full):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-9)
        for a, b in zip(inner_k, inner_full):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(float(total_k), float(total_full), rtol=1e-5)
        for key in ("synthetic", "latent_shift"):
            np.testing.assert_allclose(float(aux_k[key]), float(aux_full[key]), rtol=1e-5)


def test_with_batchnorm_slices_normalise_separately_and_train():
    """With BatchNorm the views of each slice use their own statistics: a
    different (still finite) meta-gradient; training moves the finder."""
    meta_full, *_ = _meta_step(1, "l2", norm="keras")
    meta_2, *_ = _meta_step(2, "l2", norm="keras")
    assert all(np.isfinite(g).all() for g in meta_2)
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in zip(meta_2, meta_full))
    model = tiny.wrapped("mgr", norm="keras", meta_every=1, meta_microbatches=2)
    finder = [v.numpy() for v in model.finder.weights]
    x, y = tiny.data(24)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["meta_grad_norm"][0]) and history["meta_grad_norm"][0] > 0
    assert any(not np.allclose(a.numpy(), b) for a, b in zip(model.finder.weights, finder))
    assert model.get_config()["meta_microbatches"] == 2


def test_the_graph_holds_one_pass_whatever_the_number_of_slices():
    """The slices run as a `tf.while_loop`: tracing k = 2 and k = 4 gives
    graphs of the same size (an unrolled Python loop grows with k: more
    tracing time and more process memory for the graph)."""
    def nodes(k):
        graph = tf.function(_model(k)).get_concrete_function().graph.as_graph_def()
        return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)

    assert nodes(2) == nodes(4)


def test_slices_must_divide_the_synthetic_batch():
    model = tiny.wrapped("mgr", meta_every=1, meta_microbatches=3, synthetic_batch_size=8)
    x, y = tiny.data(16)
    with pytest.raises(ValueError, match="meta_microbatches=3, synthetic batch size 8"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_auto_takes_slices_of_eight_or_more():
    """mgr's default: 4 slices, else 2, of at least 8 synthetic images; the
    whole batch below that. With BatchNorm the slicing shows in the numbers."""
    from keras_mgr import terms

    assert doctest.testmod(terms).failed == 0
    assert [terms.resolve_auto("mgr", "meta_microbatches", "auto", n)
            for n in (1, 7, 8, 15, 16, 20, 24, 32, 48, 128)] == [1, 1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert terms.resolve_auto("metagda", "meta_microbatches", "auto", 32) == 1
    assert terms.resolve_auto("mgr", "meta_microbatches", 2, 32) == 2
    meta = {k: _meta_step(k, "l2", norm="keras", synthetic=16)[0] for k in ("auto", 1, 2)}
    for a, b in zip(meta["auto"], meta[2]):
        np.testing.assert_array_equal(a, b)
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in zip(meta["auto"], meta[1]))
    auto_8, *_ = _meta_step("auto", "l2", norm="keras", synthetic=8)
    one_8, *_ = _meta_step(1, "l2", norm="keras", synthetic=8)
    for a, b in zip(auto_8, one_8):
        np.testing.assert_array_equal(a, b)


def test_auto_is_saved_and_bad_values_are_quoted(tmp_path):
    """(Files saved before the option keep 1: tests/test_saved_fixtures.py.)"""
    model = tiny.wrapped("mgr")
    assert model.meta_microbatches == "auto" and model.get_config()["meta_microbatches"] == "auto"
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").meta_microbatches == "auto"
    with pytest.raises(ValueError, match="integer >= 1 or 'auto'. Received: "
                                         "meta_microbatches='four'"):
        tiny.wrapped("mgr", meta_microbatches="four")
