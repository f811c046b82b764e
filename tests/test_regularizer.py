import keras
import numpy as np
import pytest

from keras_mgr.regularizer import MGRRegularizer


def test_l2_and_cosine_by_hand():
    f1 = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    f2 = np.array([[0.0, 1.0], [0.0, 1.0]], "float32")
    features = np.concatenate([f1, f2])
    # l2: mean of squared differences = (1 + 1 + 0 + 1) / 4.
    assert float(MGRRegularizer("l2")(features)) == pytest.approx(0.75)
    # cosine: 2 - 2 cos; cos = 0 (orthogonal) and 1 (parallel): (2 + 0) / 2.
    assert float(MGRRegularizer("cosine")(features)) == pytest.approx(1.0)


def test_simsiam_is_bounded_and_has_trainable_heads():
    reg = MGRRegularizer("simsiam", projection_dim=8, prediction_dim=4)
    reg.build((None, 6))
    assert len(reg.trainable_variables) == 10
    loss = float(reg(np.random.rand(8, 6).astype("float32")))
    assert 0.0 <= loss <= 4.0


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
