"""Bad input fails early with a message quoting what was received."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr


def wrap(backbone=None, generator=None, **kwargs):
    return keras_mgr.wrap(backbone or tiny.backbone(), generator or tiny.generator(),
                          **kwargs)


def test_generator_shape_mismatch_and_resize_option():
    generator = tiny.generator(image_shape=(6, 6, 1))
    with pytest.raises(ValueError, match=r"output shape \(6, 6, 1\).*\(8, 8, 1\).*resize"):
        wrap(generator=generator)
    model = wrap(generator=generator, resize_synthetic=True)
    phi = [v.value for v in model.finder.trainable_variables]
    assert model.synthesize(phi, model.draw(2)).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match=r"channel counts differ.*\(8, 8, 3\)"):
        wrap(generator=tiny.generator(image_shape=(8, 8, 3)), resize_synthetic=True)


def test_value_range_mismatch():
    with pytest.raises(ValueError, match=r"outputs values in \(-1.0, 1.0\).*\(0, 255\)"):
        wrap(input_range=(0, 255))
    backbone = tiny.backbone()
    backbone.input_range = (0.0, 1.0)
    with pytest.raises(ValueError, match=r"expects \(0.0, 1.0\)"):
        wrap(backbone)
    wrap(input_range=(-1, 1))  # equal ranges are fine


def test_num_classes_mismatch():
    with pytest.raises(ValueError, match="num_classes=5 passed to wrap.*num_classes=3"):
        wrap(num_classes=5)


def test_label_format_and_range():
    model = wrap()
    model.compile()
    x, y = tiny.data(6)
    with pytest.raises(ValueError, match=r"one-hot of shape \(n, 3\).*shape \(6, 4\)"):
        model.fit(x, np.eye(4)[y], verbose=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\).*\[0, 7\]"):
        model.fit(x, np.array([0, 1, 2, 7, 0, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"integer class ids.*\[0.5\]"):
        model.fit(x, np.array([0, 1, 2, 0.5, 0, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"shape \(None, 2, 2\)"):
        model.fit(tf.data.Dataset.from_tensor_slices(
            (np.zeros((8, 8, 8, 1), "float32"), np.zeros((8, 2, 2)))).batch(4), verbose=0)


def test_trainable_generator():
    generator = tiny.generator()
    generator.trainable = True
    with pytest.raises(ValueError, match=r"generator.trainable = False.*\d+ trainable"):
        wrap(generator=generator)


def test_unpooled_backbone():
    inputs = keras.Input((8, 8, 1))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match=r"pooled.*\(None, 6, 6, 4\)"):
        wrap(backbone)


def test_empty_data():
    model = wrap()
    model.compile()
    with pytest.raises(ValueError, match=r"empty.*\(0, 8, 8, 1\)"):
        model.fit(np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int32"), verbose=0)
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int32"))).batch(4)
    with pytest.raises(ValueError, match="empty.*cardinality 0"):
        model.fit(empty, verbose=0)


def test_image_shape_mismatch_in_fit():
    model = wrap()
    model.compile()
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) were expected.*\(4, 9, 9, 1\)"):
        model.fit(np.zeros((4, 9, 9, 1), "float32"), np.zeros(4, "int32"), verbose=0)


def test_non_differentiable_augmentation():
    rgb = {"backbone": tiny.backbone((8, 8, 3)), "generator": tiny.generator(image_shape=(8, 8, 3))}
    with pytest.raises(ValueError, match="not differentiable.*RandomHue"):
        wrap(augmentation=keras.layers.RandomHue(0.2, value_range=(-1, 1)), **rgb)
    wrap(augmentation=keras.layers.RandomFlip())  # differentiable: accepted


def test_invalid_options():
    with pytest.raises(ValueError, match="mode must be one of.*'foo'"):
        wrap(mode="foo")
    with pytest.raises(ValueError, match="consistency must be one of.*'l1'"):
        wrap(consistency="l1")
    with pytest.raises(ValueError, match="meta_gradient must be one of.*'first_order'"):
        wrap(meta_gradient="first_order")
    with pytest.raises(ValueError, match="meta_every must be >= 1.*0"):
        wrap(meta_every=0)
