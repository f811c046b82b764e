import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mgr.augment import ViewAugmentation


def transformation(batch=1, **overrides):
    t = {"flip": np.zeros(batch, bool), "dy": np.zeros(batch, "int32"),
         "dx": np.zeros(batch, "int32"), "brightness": np.zeros(batch, "float32"),
         "contrast": np.ones(batch, "float32")}
    t.update({k: np.asarray(v) for k, v in overrides.items()})
    return t


def test_transforms_by_hand():
    aug = ViewAugmentation(value_range=(0.0, 1.0))
    image = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    out = aug.transform_images(image, transformation(flip=[True]))
    np.testing.assert_array_equal(out[0, :, :, 0], image[0, :, ::-1, 0])
    # A shift down by one repeats the top row (edge padding).
    out = aug.transform_images(image, transformation(dy=[1]))
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1, 2], [0, 1, 2], [3, 4, 5]])
    out = aug.transform_images(image, transformation(dx=[-1]))
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 2, 2], [4, 5, 5], [7, 8, 8]])
    out = aug.transform_images(image, transformation(brightness=[0.5]))
    np.testing.assert_allclose(out, image + 0.5)
    out = aug.transform_images(image, transformation(contrast=[2.0]))
    np.testing.assert_allclose(out, (image - 4.0) * 2.0 + 4.0)


def test_random_parameters_in_range_and_seeded():
    images = np.zeros((256, 16, 16, 3), "float32")
    aug = ViewAugmentation(translate=0.125, brightness=0.2, contrast=0.3, seed=1)
    t = aug.get_random_transformation(images)
    assert set(np.unique(np.asarray(t["dy"]))) == {-2, -1, 0, 1, 2}
    assert 0.3 < np.mean(np.asarray(t["flip"])) < 0.7
    assert np.abs(np.asarray(t["brightness"])).max() <= 0.2
    assert np.abs(np.asarray(t["contrast"]) - 1).max() <= 0.3
    again = ViewAugmentation(translate=0.125, brightness=0.2, contrast=0.3, seed=1)
    np.testing.assert_array_equal(again.get_random_transformation(images)["dx"], t["dx"])


@pytest.mark.tensorflow_only("jit-compiles with tf.function and differentiates with "
                              "tf.GradientTape")
def test_differentiable_and_xla():
    aug = ViewAugmentation(seed=0)
    images = tf.random.uniform((4, 8, 8, 3))
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(aug(images) ** 2)
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, images)))) > 0
    t = aug.get_random_transformation(images)
    xla = tf.function(aug.transform_images, jit_compile=True)(images, t)
    np.testing.assert_allclose(xla, aug.transform_images(images, t), rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only("runs the layer inside a tf.data map")
def test_tf_data_and_serialization():
    aug = ViewAugmentation(flip=False, translate=0.25, seed=3)
    ds = tf.data.Dataset.from_tensor_slices(np.ones((4, 8, 8, 1), "float32")).batch(2)
    assert next(iter(ds.map(aug)))[0].shape == (8, 8, 1)
    restored = ViewAugmentation.from_config(aug.get_config())
    assert restored.get_config() == aug.get_config()
    assert aug(np.ones((1, 4, 4, 1), "float32"), training=False).numpy().sum() == 16


def test_invalid_arguments():
    with pytest.raises(ValueError, match="translate must be in"):
        ViewAugmentation(translate=1.5)
    with pytest.raises(ValueError, match="contrast must be in"):
        ViewAugmentation(contrast=-0.1)
    with pytest.raises(ValueError, match="brightness must be >= 0"):
        ViewAugmentation(brightness=-1)


def test_serializes_inside_a_model():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, ViewAugmentation(seed=0)(inputs))
    config = model.get_config()
    assert keras.Model.from_config(config).layers[1].translate == 0.125
