import keras
import numpy as np
import pytest

from keras_mgr.regularizer import MGRRegularizer


def _cosine(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _simsiam_heads(reg, features):
    """NumPy forward pass of the projector and predictor: `(z, p)`."""

    def mlp(head, h):
        kernel_1, gamma, beta, kernel_2, bias = (w.numpy().astype("float64")
                                                 for w in head.weights)
        h = h @ kernel_1
        mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        h = (h - mean) / np.sqrt(var + head.layers[1].epsilon) * gamma + beta
        return np.maximum(h, 0.0) @ kernel_2 + bias

    z = mlp(reg.projector, features)
    return z, mlp(reg.predictor, z)


def test_l2_and_cosine_by_hand():
    f1 = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    f2 = np.array([[0.0, 1.0], [0.0, 1.0]], "float32")
    features = np.concatenate([f1, f2])
    # l2: mean of squared differences = (1 + 1 + 0 + 1) / 4.
    assert float(MGRRegularizer("l2")(features)) == pytest.approx(0.75)
    # cosine: 2 - 2 cos; cos = 0 (orthogonal) and 1 (parallel): (2 + 0) / 2.
    assert float(MGRRegularizer("cosine")(features)) == pytest.approx(1.0)
    # On random features, against NumPy.
    features = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    f1, f2 = features[:3].astype("float64"), features[3:].astype("float64")
    assert float(MGRRegularizer("l2")(features)) == pytest.approx(
        np.mean((f1 - f2) ** 2), rel=1e-5)
    assert float(MGRRegularizer("cosine")(features)) == pytest.approx(
        np.mean(2 - 2 * _cosine(f1, f2)), rel=1e-5)


def test_simsiam_by_hand():
    reg = MGRRegularizer("simsiam", projection_dim=8, prediction_dim=4)
    reg.build((None, 6))
    assert len(reg.trainable_variables) == 10
    rng = np.random.default_rng(1)
    for w in reg.weights:  # LayerNorm's gamma / beta away from 1 / 0 too
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape).astype("float32"))
    features = rng.normal(size=(8, 6)).astype("float32")
    z, p = _simsiam_heads(reg, features.astype("float64"))
    (z1, z2), (p1, p2) = np.split(z, 2), np.split(p, 2)
    expected = np.mean(2 - _cosine(p1, z2) - _cosine(p2, z1))
    assert float(reg(features)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.tensorflow_only("differentiates with tf.GradientTape")
def test_simsiam_targets_are_stop_gradient():
    """The projector outputs z1, z2 are targets only: no gradient flows
    through them, to the features or to the projector's own weights."""
    import tensorflow as tf

    reg = MGRRegularizer("simsiam", projection_dim=8, prediction_dim=4)
    reg.build((None, 6))
    features = tf.constant(np.random.default_rng(2).normal(size=(8, 6)), "float32")

    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = reg(features)
        return tape.gradient(loss, [features] + reg.trainable_variables,
                             unconnected_gradients="zero")

    # 1. A constant predictor p = b (zero last kernel): the loss then depends
    # on the features only through the targets, so only the predictor's last
    # layer gets a gradient.
    last = reg.predictor.layers[-1]
    kept = last.kernel.numpy()
    last.kernel.assign(np.zeros_like(kept))
    last.bias.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    grads = gradients()
    for variable, grad in zip([features] + reg.trainable_variables, grads):
        if variable is last.kernel or variable is last.bias:
            assert np.abs(grad.numpy()).max() > 0
        else:
            np.testing.assert_array_equal(grad.numpy(), 0.0, err_msg=getattr(
                variable, "path", "features"))
    # 2. In general, the gradient of a loss written with the targets as
    # constants (computed beforehand, outside the tape).
    last.kernel.assign(kept)
    targets = tf.constant(reg.projector(features))
    t1, t2 = tf.split(targets, 2)

    def cosine(a, b):
        return tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1)

    with tf.GradientTape() as tape:
        tape.watch(features)
        p1, p2 = tf.split(reg.predictor(reg.projector(features)), 2)
        surrogate = tf.reduce_mean(2 - cosine(p1, t2) - cosine(p2, t1))
    expected = tape.gradient(surrogate, [features] + reg.trainable_variables,
                             unconnected_gradients="zero")
    for a, b in zip(gradients(), expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_views_use_drawn_transformations():
    reg = MGRRegularizer("l2", seed=0)
    images = np.random.rand(3, 8, 8, 1).astype("float32")
    t = reg.draw_views(images)
    v1 = reg.views(images, t)
    np.testing.assert_array_equal(v1, reg.views(images, t))
    assert v1.shape == (6, 8, 8, 1)
    assert not np.allclose(v1[:3], v1[3:])


def test_invalid_consistency_and_serialization():
    with pytest.raises(ValueError, match="consistency must be one of"):
        MGRRegularizer("kl")
    reg = MGRRegularizer("cosine", value_range=(0, 1), seed=2)
    restored = MGRRegularizer.from_config(reg.get_config())
    assert restored.consistency == "cosine"
    assert restored.augmentation.value_range == (0, 1)
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(reg)).consistency == "cosine"
