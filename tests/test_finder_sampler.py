import keras
import numpy as np

from keras_mgr.finder import Finder
from keras_mgr.synthetic import SyntheticSampler


def test_fresh_finder_is_identity_and_trains():
    finder = Finder(latent_dim=4, num_classes=3, hidden_dim=8)
    z = np.random.randn(5, 4).astype("float32")
    np.testing.assert_array_equal(finder([z, np.array([0, 1, 2, 0, 1])]), z)
    restored = Finder.from_config(finder.get_config())
    assert restored.get_config() == finder.get_config()
    assert len(finder.trainable_variables) == 6


def test_sampler_balanced_seeded_and_xla_identical():
    import tensorflow as tf

    sampler = SyntheticSampler(latent_dim=2, num_classes=4, seed=0)
    for n in (4, 10, 3):
        _, labels = sampler.sample(n)
        counts = np.bincount(labels.numpy(), minlength=4)
        assert counts.max() - counts.min() <= 1, counts
    z, _ = SyntheticSampler(2, 4, seed=0).sample(4000)
    assert abs(float(np.mean(z))) < 0.05 and abs(float(np.std(z)) - 1) < 0.05
    a, b = SyntheticSampler(2, 4, seed=5), SyntheticSampler(2, 4, seed=5)
    za, la = a.sample(6)
    zb, lb = tf.function(lambda: b.sample(6), jit_compile=True)()
    np.testing.assert_allclose(za, zb, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(la, lb)
    assert not np.allclose(za, a.sample(6)[0])  # the state advances
    keras.utils.set_random_seed(0)


def test_synthetic_dataset_balanced_seeded_and_recomputable():
    import tensorflow as tf

    from keras_mgr.synthetic import balanced_draw, synthetic_dataset

    def generator(inputs, training=False):  # images encode (z[0], label)
        z, labels = inputs
        return tf.reshape(z[:, :1] + tf.cast(labels[:, None], z.dtype) * 100.0, (-1, 1, 1, 1))

    ds = synthetic_dataset(generator, batch_size=6, num_batches=3, seed=4, latent_dim=2,
                           num_classes=3)
    assert type(ds).__name__ == "_PrefetchDataset"
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
    assert len(list(synthetic_dataset(generator, 6, seed=4, latent_dim=2,
                                      num_classes=3).take(5))) == 5  # repeats


def test_synthetic_dataset_needs_latent_dim_and_classes():
    import pytest

    from keras_mgr.synthetic import synthetic_dataset

    with pytest.raises(ValueError, match="latent_dim=0, num_classes=3"):
        synthetic_dataset(lambda inputs, training=False: inputs[0], 4, num_classes=3)
