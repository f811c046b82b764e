import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mgr.generators import (
    ConditionalGAN,
    ConditionalGenerator,
    DiffAugment,
    ProjectionDiscriminator,
    conditional_generator,
)

TINY = dict(latent_dim=8, generator_filters=4, discriminator_filters=4)


def _batch(n=8, shape=(32, 32, 1), num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n,) + shape).astype("float32")
    labels = (np.arange(n) % num_classes).astype("int32")
    return images, labels


# --- ConditionalGenerator ---------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32, 1), (64, 64, 3), (28, 28, 1)])
def test_generator_protocol(shape):
    g = conditional_generator(8, 5, shape, base_filters=4, output_range=(0.0, 2.0))
    assert (g.latent_dim, g.num_classes, g.output_range) == (8, 5, (0.0, 2.0))
    z = keras.random.normal((6, 8), seed=0) * 50.0  # saturate the tanh
    labels = keras.ops.convert_to_tensor(np.arange(6, dtype="int32") % 5)
    images = g([z, labels], training=False)
    assert tuple(images.shape) == (6,) + shape
    assert keras.backend.standardize_dtype(images.dtype) == "float32"
    images = keras.ops.convert_to_numpy(images)
    assert images.min() >= 0.0 and images.max() <= 2.0
    assert images.max() - images.min() > 0.5  # tanh range mapped, not clipped to a point


def test_generator_attributes_survive_saving(tmp_path):
    g = ConditionalGenerator(latent_dim=8, num_classes=3, image_shape=(32, 32, 1),
                             base_filters=4, output_range=(-1.0, 1.0))
    path = os.path.join(tmp_path, "g.keras")
    g.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ConditionalGenerator)
    assert (loaded.latent_dim, loaded.num_classes, loaded.output_range) == (8, 3, (-1.0, 1.0))
    z, y = np.ones((2, 8), "float32"), np.array([0, 2], "int32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded([z, y])),
                               keras.ops.convert_to_numpy(g([z, y])), atol=1e-6)


def test_generator_label_changes_output():
    g = ConditionalGenerator(latent_dim=8, num_classes=3, image_shape=(32, 32, 1), base_filters=4)
    z = np.ones((3, 8), "float32")
    out = keras.ops.convert_to_numpy(g([z, np.array([0, 1, 2], "int32")]))
    assert np.abs(out[0] - out[1]).max() > 1e-4


def test_generator_bad_shape():
    with pytest.raises(ValueError, match=r"Received: image_shape=\(30, 30, 1\)"):
        ConditionalGenerator(image_shape=(30, 30, 1))
    with pytest.raises(ValueError, match=r"Received: output_range=\(1.0, 0.0\)"):
        ConditionalGenerator(output_range=(1.0, 0.0))


# --- ProjectionDiscriminator -----------------------------------------------------


def test_discriminator_projection_term():
    d = ProjectionDiscriminator(num_classes=3, image_shape=(32, 32, 1), base_filters=4)
    images = np.zeros((3, 32, 32, 1), "float32") + 0.3
    out = keras.ops.convert_to_numpy(d([images, np.array([0, 1, 2], "int32")]))
    assert out.shape == (3, 1)
    # Same image, different labels: only the projection term differs.
    phi = keras.Model(d.inputs, d.get_layer("phi").output)([images, np.zeros(3, "int32")])
    embed = d.get_layer("sn_label_embedding").layer.kernel  # (3, features)
    expected = keras.ops.convert_to_numpy(keras.ops.sum(embed * phi, axis=1))
    np.testing.assert_allclose(out[:, 0] - out[0, 0], expected - expected[0], rtol=1e-4, atol=1e-5)


# --- DiffAugment ---------------------------------------------------------------


def test_diff_augment_translation_by_hand():
    layer = DiffAugment("translation")
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    params = {"shift": np.array([[1, -1]], "int32")}
    out = keras.ops.convert_to_numpy(layer.transform_images(x, params))[0, :, :, 0]
    # Down one row, left one column, zeros where the shift leaves the image.
    expected = np.array(
        [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]], "float32"
    )
    np.testing.assert_array_equal(out, expected)


def test_diff_augment_cutout_and_color_by_hand():
    layer = DiffAugment("color,cutout", cutout_ratio=0.5)
    x = np.ones((1, 4, 4, 1), "float32")
    params = {
        "brightness": np.full((1, 1, 1, 1), 0.5, "float32"),
        "saturation": np.ones((1, 1, 1, 1), "float32"),
        "contrast": np.full((1, 1, 1, 1), 2.0, "float32"),
        "cutout": np.array([[1, 2]], "int32"),
    }
    out = keras.ops.convert_to_numpy(layer.transform_images(x, params))[0, :, :, 0]
    # 1 + 0.5 = 1.5, flat so contrast keeps it; a 2x2 hole at rows 1-2, cols 2-3.
    expected = np.full((4, 4), 1.5, "float32")
    expected[1:3, 2:4] = 0.0
    np.testing.assert_allclose(out, expected)


@pytest.mark.tensorflow_only("differentiates with tf.GradientTape")
def test_diff_augment_differentiable_and_serializable():
    layer = DiffAugment(seed=1)
    x = tf.Variable(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y**2)
    grad = tape.gradient(loss, x)
    assert y.shape == x.shape and grad is not None
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0
    clone = DiffAugment.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.ops.convert_to_numpy(DiffAugment("")(x)).tolist() == x.numpy().tolist()
    with pytest.raises(ValueError, match="Received: policy='flip'"):
        DiffAugment("flip")


# --- ConditionalGAN ----------------------------------------------------------------


def test_gan_trains_with_finite_moving_losses():
    keras.utils.set_random_seed(0)
    images, labels = _batch(32, num_classes=4)
    gan = ConditionalGAN(num_classes=4, image_shape=(32, 32, 1), seed=0, **TINY)
    gan.compile()
    before_g = [w.copy() for w in gan.online_generator.get_weights()]
    before_ema = [w.copy() for w in gan.generator.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    history = gan.fit(ds, epochs=3, verbose=0).history
    assert set(history) == {"d_loss", "g_loss"}
    for key in ("d_loss", "g_loss"):
        assert np.all(np.isfinite(history[key]))
        assert len(set(np.round(history[key], 6))) > 1  # losses move
    assert int(gan.g_optimizer.iterations) == 12 and int(gan.d_optimizer.iterations) == 12
    changed = [np.abs(a - b).max() for a, b in zip(before_g, gan.online_generator.get_weights())]
    assert max(changed) > 0
    ema_changed = [np.abs(a - b).max() for a, b in zip(before_ema, gan.generator.get_weights())]
    assert max(ema_changed) > 0
    assert not gan.generator.trainable  # frozen, ready for wrap()


def test_gan_ema_first_step_by_hand():
    # decay_t = min(ema_decay, (1 + t) / (10 + t)) with t = 1 after the first
    # generator step: the EMA is 2/11 * ema_0 + 9/11 * online_1. A large
    # learning rate makes online_1 far from ema_0, so the weights are checked.
    gan = ConditionalGAN(num_classes=2, image_shape=(32, 32, 1), seed=0, **TINY)
    gan.compile(g_optimizer=keras.optimizers.Adam(0.05))
    ema0 = gan.generator.get_weights()
    images, labels = _batch(4, num_classes=2)
    gan.train_on_batch(images, labels)
    online1 = gan.online_generator.get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(ema0, online1)) > 0.01
    for e0, o1, e1 in zip(ema0, online1, gan.generator.get_weights()):
        np.testing.assert_allclose(e1, 2 / 11 * e0 + 9 / 11 * o1, rtol=1e-5, atol=1e-6)


def test_gan_samples_differ_by_label_and_seed():
    gan = ConditionalGAN(num_classes=3, image_shape=(32, 32, 1), seed=0, **TINY)
    a = gan.sample([0, 1, 2], seed=5)
    b = gan.sample([0, 1, 2], seed=5)
    c = gan.sample([1, 1, 1], seed=5)
    assert a.shape == (3, 32, 32, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0] - c[0]).max() > 1e-5  # same z, other label
    np.testing.assert_allclose(a[1], c[1], atol=1e-6)  # same z, same label
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_gan_64x64_rgb_step():
    gan = ConditionalGAN(num_classes=2, image_shape=(64, 64, 3), seed=0, **TINY)
    gan.compile()
    images, labels = _batch(4, shape=(64, 64, 3), num_classes=2)
    logs = gan.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["d_loss"]) and np.isfinite(logs["g_loss"])
    assert gan.sample([0, 1], seed=0).shape == (2, 64, 64, 3)


def test_gan_save_load_round_trip(tmp_path):
    gan = ConditionalGAN(num_classes=3, image_shape=(32, 32, 1), seed=0, **TINY)
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer="auto")
    images, labels = _batch(6, num_classes=3)
    gan.train_on_batch(images, labels)
    path = os.path.join(tmp_path, "gan.keras")
    gan.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ConditionalGAN)
    assert loaded.get_config() == gan.get_config()
    np.testing.assert_allclose(
        loaded.sample([0, 1, 2], seed=3), gan.sample([0, 1, 2], seed=3), atol=1e-6
    )
    assert loaded.generator.latent_dim == 8 and loaded.generator.num_classes == 3
    # Both optimizers come back with their state.
    assert float(loaded.g_optimizer.learning_rate) == pytest.approx(1e-3)
    assert int(loaded.g_optimizer.iterations) == 1 and int(loaded.d_optimizer.iterations) == 1
    for a, b in zip(gan.d_optimizer.variables, loaded.d_optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.train_on_batch(images, labels)  # resumes


def test_gan_bad_args():
    with pytest.raises(ValueError, match="Received: ema_decay=1.0"):
        ConditionalGAN(ema_decay=1.0)


def test_gan_nonfinite_batch_stops_with_the_term_and_no_nan_weight():
    gan = ConditionalGAN(num_classes=4, image_shape=(32, 32, 1), seed=0, **TINY)
    gan.compile()
    images, labels = _batch(16, num_classes=4)
    gan.fit(images[:8], labels[:8], batch_size=8, verbose=0)
    before = [w.copy() for w in gan.get_weights()]
    images[9, 0, 0, 0] = np.nan  # in the second batch: step 3 counting the first fit's
    with pytest.raises(FloatingPointError, match=r"Non-finite d_loss at GAN training step 3 "
                                                 r"\(epoch batch 2\).*d_loss=nan"):
        gan.fit(images, labels, batch_size=8, shuffle=False, verbose=0)
    after = gan.get_weights()
    assert all(np.all(np.isfinite(w)) for w in after)
    # Only the first (clean) batch of that fit moved anything: one step each.
    assert int(gan.g_optimizer.iterations) == 2 and int(gan.d_optimizer.iterations) == 2
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


@pytest.mark.parametrize("make, message", [
    (lambda x, y: (tf.data.Dataset.from_tensor_slices((x, y)), None), "batch it"),
    (lambda x, y: (tf.data.Dataset.from_tensor_slices((x, np.eye(4)[y])).batch(4), None),
     r"not one-hot.*tf.argmax.*\(None, 4\)"),
    (lambda x, y: (x, np.eye(4)[y]), r"one int class id per image.*labels of shape \(8, 4\)"),
    (lambda x, y: (x, y[:5]), r"labels of shape \(5,\) for images of shape \(8, 32, 32, 1\)"),
    (lambda x, y: (x, None), r"needs labels.*y=None"),
    (lambda x, y: (x, y + 4), r"class ids in \[0, 4\).*\[4, 7\]"),
    (lambda x, y: (x[:, :16], y), r"\(32, 32, 1\).*\(8, 16, 32, 1\)"),
])
def test_gan_fit_input_errors_quote_what_was_received(make, message):
    gan = ConditionalGAN(num_classes=4, image_shape=(32, 32, 1), seed=0, **TINY)
    gan.compile()
    x, y = make(*_batch(8, num_classes=4))
    with pytest.raises(ValueError, match=message):
        gan.fit(x, y, verbose=0) if y is not None or not isinstance(x, np.ndarray) else (
            gan.fit(x, verbose=0))
    assert int(gan.g_optimizer.iterations) == 0


def test_gan_with_loss_scale_optimizers_lowers_the_scale_after_an_overflow():
    """A LossScaleOptimizer skips an overflowing step and halves its scale
    itself; the GAN must let it see that step. At an initial scale of 2^127
    every gradient overflows in float32 until the scale has come down, then
    the weights move."""
    gan = ConditionalGAN(num_classes=4, image_shape=(32, 32, 1), seed=0, **TINY)

    def scaled():
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3),
                                                   initial_scale=2.0 ** 127)

    gan.compile(g_optimizer=scaled(), d_optimizer=scaled())
    images, labels = _batch(8, num_classes=4)
    gan.fit(images[:2], labels[:2], batch_size=2, epochs=1, verbose=0)
    before = [w.copy() for w in gan.discriminator.get_weights()]
    gan.fit(images, labels, batch_size=2, epochs=4, verbose=0)  # 16 steps
    for optimizer in (gan.d_optimizer, gan.g_optimizer):
        assert float(optimizer.dynamic_scale.numpy()) < 2.0 ** 127
    assert any(np.abs(a - b).max() > 0
               for a, b in zip(before, gan.discriminator.get_weights()))
