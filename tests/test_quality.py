import numpy as np
import pytest
import tensorflow as tf

from keras_mgr.datasets import load
from keras_mgr.generators import frechet_distance, generator_quality, quality


def test_frechet_distance_1d_by_hand():
    a = np.array([[0.0], [2.0]])  # mean 1, variance 1
    b = np.array([[3.0], [7.0]])  # mean 5, variance 4
    # (5 - 1)^2 + (sqrt(4) - sqrt(1))^2
    assert frechet_distance(a, b) == pytest.approx(17.0)


def test_frechet_distance_2d_by_hand():
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean 1, cov I
    b = 3.0 * a + 1.0  # mean 4, cov 9 I
    # |(3, 3)|^2 + 2 * (3 - 1)^2 = 18 + 8
    assert frechet_distance(a, b) == pytest.approx(26.0)
    assert frechet_distance(b, a) == pytest.approx(26.0)


def test_frechet_distance_identity_and_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_frechet_distance_bad_shapes():
    with pytest.raises(ValueError, match=r"Received: shapes \(3, 2\) and \(3, 4\)"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))


class LookupGenerator:
    """Returns a fixed real image per class; follows the generator protocol."""

    latent_dim = 4
    num_classes = 10
    output_range = (-1.0, 1.0)

    def __init__(self, table):
        self.table = tf.constant(table)

    def __call__(self, inputs, training=False):
        _, labels = inputs
        return tf.gather(self.table, labels)


@pytest.fixture(scope="module")
def small_digits_and_judge():
    data = load("digits", ratio=0.2, image_size=16)
    judge = quality.train_feature_classifier(data, steps=150, seed=0)
    return data, judge


def test_generator_quality_right_and_wrong_labels(small_digits_and_judge):
    data, judge = small_digits_and_judge
    prototypes = np.stack([data.x_train[data.y_train == c][0] for c in range(10)])
    predicted = judge.predict(prototypes, verbose=0).argmax(-1)
    assert np.mean(predicted == np.arange(10)) >= 0.8  # the judge has learnt

    right = generator_quality(LookupGenerator(prototypes), data, judge, samples_per_class=3)
    # Every sample of class c is prototype c: per-class accuracy is 0 or 1.
    expected = (predicted == np.arange(10)).astype(float)
    np.testing.assert_array_equal(right["per_class_accuracy"], expected)
    assert right["accuracy"] == pytest.approx(expected.mean())

    shifted = np.roll(prototypes, 1, axis=0)  # class c draws a (c - 1)
    wrong = generator_quality(LookupGenerator(shifted), data, judge, samples_per_class=3)
    assert wrong["accuracy"] <= 0.2

    for scores in (right, wrong):
        assert len(scores["per_class_accuracy"]) == 10
        assert 0.0 <= scores["real_test_accuracy"] <= 1.0
        assert scores["fid"] > 0 and scores["real_fid"] >= 0
        assert scores["num_test"] == 539 and scores["samples_per_class"] == 3
    # Ten fixed images are far from real data, farther than real train is from test.
    assert right["fid"] > right["real_fid"]
