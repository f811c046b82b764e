import keras
import numpy as np

from keras_mgr.finder import Finder
from keras_mgr.synthetic import SyntheticSampler


def test_fresh_finder_is_identity_and_trains():
    import tensorflow as tf

    finder = Finder(latent_dim=4, num_classes=3, hidden_dim=8)
    z = np.random.randn(5, 4).astype("float32")
    labels = np.array([0, 1, 2, 0, 1])
    np.testing.assert_array_equal(finder([z, labels]), z)
    restored = Finder.from_config(finder.get_config())
    assert restored.get_config() == finder.get_config()
    assert len(finder.trainable_variables) == 6
    # One SGD step on ||F(z) - (z + 1)||^2: only the zero-initialised residual
    # layer has a gradient at first (the hidden layers' flows through its zero
    # kernel); it moves, F(z) moves off z, towards the target.
    target = z + 1.0
    before = [v.numpy() for v in finder.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(finder([z, labels]) - target))
    grads = tape.gradient(loss, finder.trainable_variables)
    keras.optimizers.SGD(0.1).apply(grads, finder.trainable_variables)
    moved = {v.path.split("/")[-2]: not np.array_equal(v.numpy(), b)
             for v, b in zip(finder.trainable_variables, before)}
    assert moved == {"hidden_0": False, "hidden_1": False, "residual": True}, moved
    after = finder([z, labels]).numpy()
    assert not np.allclose(after, z)
    assert np.mean((after - target) ** 2) < float(loss)
def test_sampler_balanced_seeded_and_xla_identical():
    import tensorflow as tf

    sampler = SyntheticSampler(latent_dim=2, num_classes=4, seed=0)
    for n in (4, 10, 3):
        _, labels = sampler(batch_size=n)
        counts = np.bincount(labels.numpy(), minlength=4)
        assert counts.max() - counts.min() <= 1, counts
    z, _ = SyntheticSampler(2, 4, seed=0)(batch_size=4000)
    assert abs(float(np.mean(z))) < 0.05 and abs(float(np.std(z)) - 1) < 0.05
    a, b = SyntheticSampler(2, 4, seed=5), SyntheticSampler(2, 4, seed=5)
    za, la = a(batch_size=6)
    zb, lb = tf.function(lambda: b(batch_size=6), jit_compile=True)()
    np.testing.assert_allclose(za, zb, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(la, lb)
    assert not np.allclose(za, a(batch_size=6)[0])  # the state advances
    keras.utils.set_random_seed(0)


def test_synthetic_dataset_balanced_seeded_and_recomputable():
    import tensorflow as tf

    from keras_mgr.synthetic import balanced_draw, synthetic_dataset

    def generator(inputs, training=False):  # images encode (z[0], label)
        z, labels = inputs
        return tf.reshape(z[:, :1] + tf.cast(labels[:, None], z.dtype) * 100.0, (-1, 1, 1, 1))

    ds = synthetic_dataset(generator, batch_size=6, num_batches=3, seed=4, latent_dim=2,
                           num_classes=3)
    assert int(ds.cardinality()) == 3
    assert ds.element_spec == (tf.TensorSpec((6, 1, 1, 1), tf.float32),
                               tf.TensorSpec((6,), tf.int32))
    batches = list(ds)
    assert len(batches) == 3
    for i, (images, labels) in enumerate(batches):
        assert images.shape == (6, 1, 1, 1) and labels.dtype == tf.int32
        np.testing.assert_array_equal(np.bincount(labels.numpy(), minlength=3), [2, 2, 2])
        z, expected = balanced_draw(6, 2, 3, tf.constant([4, i], "uint32"))
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_allclose(images.numpy().ravel(),
                                   z.numpy()[:, 0] + 100.0 * expected.numpy(), rtol=1e-6)
    again = list(synthetic_dataset(generator, 6, 3, seed=4, latent_dim=2, num_classes=3))
    np.testing.assert_array_equal(again[2][0], batches[2][0])
    other = list(synthetic_dataset(generator, 6, 1, seed=5, latent_dim=2, num_classes=3))
    assert not np.allclose(other[0][0], batches[0][0])
    endless = synthetic_dataset(generator, 6, seed=4, latent_dim=2, num_classes=3)
    size = int(endless.cardinality())  # endless, or as good as
    assert size == tf.data.INFINITE_CARDINALITY or size >= 2**40, size
    first = list(endless.take(5))  # batch i of any stream is the same batch
    np.testing.assert_array_equal(first[2][0], batches[2][0])


def test_synthetic_dataset_needs_latent_dim_and_classes():
    import pytest

    from keras_mgr.synthetic import synthetic_dataset

    with pytest.raises(ValueError, match="latent_dim=0, num_classes=3"):
        synthetic_dataset(lambda inputs, training=False: inputs[0], 4, num_classes=3)
