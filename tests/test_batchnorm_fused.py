"""The fused BatchNorm training pass: Keras's function, TensorFlow's one kernel."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny
from keras import layers

from keras_mgr.batchnorm import fused as fused_batchnorm
from keras_mgr.batchnorm.fused import fuse, is_fused, unfused
from keras_mgr.layers import ExactBatchNormalization


def pair(shape, **options):
    """Two BatchNormalization layers with the same random weights; the second fused."""
    rng = np.random.default_rng(0)
    keras_bn, fused_bn = (layers.BatchNormalization(momentum=0.9, **options) for _ in "ab")
    for layer in (keras_bn, fused_bn):
        layer.build(shape)
    keras_bn.set_weights([rng.normal(size=w.shape).astype("float32") if w.trainable
                          else w.numpy() for w in keras_bn.weights])
    fused_bn.set_weights(keras_bn.get_weights())
    inputs = keras.Input(shape[1:])
    assert fuse(keras.Model(inputs, fused_bn(inputs))) == 1
    return keras_bn, fused_bn


def run(layer, x, w, training=True, **kwargs):
    """Output, gradients (input, gamma, beta) of sum(sin(y) * w), moving statistics."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training, **kwargs)
        loss = tf.reduce_sum(tf.sin(y) * w)
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return [y] + grads + [layer.moving_mean.value, layer.moving_variance.value]


def bn_layers(model):
    return [layer for layer in model.backbone.layers
            if isinstance(layer, layers.BatchNormalization)]


def op_types(fn):
    return {op.type for op in tf.function(fn).get_concrete_function().graph.get_operations()}


@pytest.mark.parametrize("shape,options", [
    ((8, 5, 5, 3), {}), ((16, 3), {}), ((4, 6, 3), {}), ((2, 2, 3, 2, 3), {}), ((1, 3), {}),
    ((8, 5, 5, 3), {"center": False, "scale": False}),
    ((8, 5, 5, 3), {"epsilon": 1e-5})])  # run with cuDNN's 1.001e-5
def test_same_function_as_keras(shape, options):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, size=shape).astype("float32"))
    w = tf.constant(rng.normal(size=shape).astype("float32"))
    keras_bn, fused_bn = pair(shape, **options)
    expected, got = run(keras_bn, x, w), run(fused_bn, x, w)
    for name, e, g in zip(["y", "dx", "dgamma", "dbeta", "moving mean", "moving variance"],
                          expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=name)
    # The moving variance takes the biased batch variance, as Keras's does.
    if shape[0] > 1:
        biased = np.var(x.numpy().reshape(-1, shape[-1]), axis=0)
        np.testing.assert_allclose(got[-1], 0.9 + 0.1 * biased, rtol=1e-5)


def test_the_fused_kernel_runs_only_where_it_applies():
    keras_bn, fused_bn = pair((4, 3, 3, 2))
    x = tf.ones((4, 3, 3, 2))
    assert "FusedBatchNormV3" in op_types(lambda: fused_bn(x, training=True))
    assert "FusedBatchNormV3" not in op_types(lambda: keras_bn(x, training=True))
    assert "FusedBatchNormV3" not in op_types(lambda: fused_bn(x, training=False))

    def within_unfused():
        with unfused():
            return fused_bn(x, training=True)

    assert "FusedBatchNormV3" not in op_types(within_unfused)
    fused_bn.trainable = False  # a frozen layer uses its moving statistics
    assert "FusedBatchNormV3" not in op_types(lambda: fused_bn(x, training=True))


def test_unfused_holds_in_its_own_thread_only():
    # MirroredStrategy traces each replica in a thread of its own.
    _, fused_bn = pair((4, 3, 3, 2))
    x = tf.ones((4, 3, 3, 2))
    seen = {}

    def other_thread():
        seen["ops"] = op_types(lambda: fused_bn(x, training=True))

    with unfused():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        here = op_types(lambda: fused_bn(x, training=True))
    assert "FusedBatchNormV3" in seen["ops"] and "FusedBatchNormV3" not in here


@pytest.mark.parametrize("options,fusable", [
    ({}, True), ({"epsilon": 1e-5}, True), ({"epsilon": 1e-6}, False),
    ({"synchronized": True}, False), ({"renorm": True}, False)])
def test_eligible_layers(options, fusable):
    assert fused_batchnorm.eligible(layers.BatchNormalization(**options)) == fusable


def test_exact_batchnorm_is_fused_and_a_custom_pass_is_not():
    # ExactBatchNormalization's moments are the fused kernel's (exact); a
    # subclass with its own call or moments keeps them.
    class Custom(layers.BatchNormalization):
        def _moments(self, inputs, mask):
            return super()._moments(inputs * 2.0, mask)

    assert fused_batchnorm.eligible(ExactBatchNormalization())
    assert not fused_batchnorm.eligible(Custom())


def test_other_layouts_fall_back_to_keras_and_agree():
    # Features on axis 1 and a mask: Keras's own pass, same results.
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 3, 5)).astype("float32"))
    w = tf.ones_like(x)
    keras_bn, fused_bn = pair((4, 3, 5), axis=1)
    assert "FusedBatchNormV3" not in op_types(lambda: fused_bn(x, training=True))
    for e, g in zip(run(keras_bn, x, w), run(fused_bn, x, w)):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    keras_bn, fused_bn = pair((4, 3, 5))
    mask = tf.constant([[True, True, False]] * 4)
    assert "FusedBatchNormV3" not in op_types(lambda: fused_bn(x, training=True, mask=mask))


def test_stateless_call_returns_the_statistics_without_assigning():
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, layers.BatchNormalization(momentum=0.5)(inputs))
    fuse(model)
    x = tf.constant(np.random.default_rng(3).normal(1.0, 2.0, (6, 4, 4, 2)).astype("float32"))
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    _, new_state = model.stateless_call(trainable, state, x, training=True)
    flat = x.numpy().reshape(-1, 2)
    np.testing.assert_allclose(new_state[0], 0.5 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(new_state[1], 0.5 + 0.5 * flat.var(0), rtol=1e-5)
    np.testing.assert_array_equal(model.non_trainable_variables[0].numpy(), [0.0, 0.0])


def test_wrap_fuses_the_backbone_and_the_option_keeps_keras():
    model = tiny.wrapped("pcr", norm="keras")
    (bn,) = bn_layers(model)
    assert is_fused(bn) and model.get_config()["fused_batchnorm"] == "auto"
    off = tiny.wrapped("pcr", norm="keras", fused_batchnorm=False)
    (bn,) = bn_layers(off)
    assert not is_fused(bn) and off.get_config()["fused_batchnorm"] is False


def test_saved_model_is_fused_again(tmp_path):
    model = tiny.wrapped("base", norm="keras")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    (bn,) = bn_layers(loaded)
    assert is_fused(bn)
    off = tiny.wrapped("base", norm="keras", fused_batchnorm=False)
    off.save(tmp_path / "off.keras")
    loaded = keras.models.load_model(tmp_path / "off.keras")
    assert not loaded.fused_batchnorm


def test_training_matches_keras_batchnorm(norm="keras"):
    x, y = tiny.data(32)
    weights = []
    for fused in (True, False):
        # SGD: Adam turns the rounding noise on the conv bias before BN (true
        # gradient 0) into steps of random sign.
        model = tiny.wrapped("mgr", norm=norm, fused_batchnorm=fused, meta_every=2,
                             optimizer=keras.optimizers.SGD(0.1), batchnorm_momentum=0.3)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        weights.append([v.numpy() for v in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_meta_gradient_is_keras_batchnorms(microbatches):
    # The meta step's second-order pass runs unfused (keras_mgr.meta), so its
    # meta-gradient is Keras BatchNorm's, whose variance around
    # stop_gradient(mean) the fused kernel's exact second derivative would
    # change by about 0.8% here.
    x, y = tiny.data(12, seed=0)
    x_val, y_val = tiny.data(9, seed=1)
    grads = []
    for fused in (True, False):
        model = tiny.wrapped("mgr", norm="keras", fused_batchnorm=fused, synthetic_batch_size=6,
                             meta_microbatches=microbatches,
                             optimizer=keras.optimizers.SGD(0.5))
        rng = np.random.default_rng(1)
        for v in model.finder.trainable_variables:
            v.assign(v.numpy() + 0.3 * rng.standard_normal(v.shape))
        state = [v.value for v in model.backbone.non_trainable_variables]
        g, *_ = model.objective.meta_step_gradients(
            model.classifier_variables, state, model.finder.trainable_variables, x, y,
            model.objective.draw(6), x_val, y_val, np.ones(9, "float32"))
        grads.append(np.concatenate([t.numpy().ravel() for t in g]))
    error = np.linalg.norm(grads[0] - grads[1]) / np.linalg.norm(grads[1])
    assert error < 2e-4, error
