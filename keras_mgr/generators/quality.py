"""Offline generator quality measures (no pretrained network, no download).

A small CNN trained on the real training images is the judge:
- class fidelity: its accuracy on generated images, per class, against the
  label the generator was asked for;
- an FID-style Frechet distance between Gaussian fits of its penultimate
  features on real and on generated images.

Scores from different judges are not comparable: compare generators with one
judge (pass `classifier=`), and read each score next to the judge's own
accuracy on real test images and the real train-vs-test distance, which the
returned dict also holds.
"""

import math

import keras
import numpy as np

from keras_mgr.synthetic import sample

FEATURE_LAYER = "features"


def feature_classifier(image_shape, num_classes, feature_dim=64):
    """Small CNN classifier whose layer `"features"` gives FID features.

    Args:
        image_shape: tuple `(height, width, channels)`.
        num_classes: int.
        feature_dim: int, width of the feature layer.

    Returns:
        An uncompiled `keras.Model` from images to logits.
    """
    images = keras.Input(image_shape)
    x = images
    for filters in (32, 64, 128):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(feature_dim, activation="relu", name=FEATURE_LAYER)(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(images, logits, name="feature_classifier")


def train_feature_classifier(data, steps=600, batch_size=32, seed=0, verbose=0):
    """Train `feature_classifier` on `data.x_train` only.

    Args:
        data: a `keras_mgr.datasets.Dataset`.
        steps: int, optimizer steps (about, rounded up to whole epochs), so
            that small and large subsets get the same training length.
        batch_size: int.
        seed: int, seeds weights and shuffling.
        verbose: passed to `fit`.

    Returns:
        The trained `keras.Model` (logits output).
    """
    keras.utils.set_random_seed(seed)
    model = feature_classifier(data.image_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    per_epoch = math.ceil(len(data.y_train) / batch_size)
    model.fit(
        data.as_dataset("train", batch_size, shuffle=True, seed=seed),
        epochs=max(1, math.ceil(steps / per_epoch)),
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself
    )
    return model


def frechet_distance(features_a, features_b):
    """Frechet distance between Gaussian fits of two feature sets.

    `|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`, the formula of FID.
    The trace of the matrix square root is computed from the eigenvalues of
    the symmetric `S_a^(1/2) S_b S_a^(1/2)`, which are the same as those of
    `S_a S_b`.

    Args:
        features_a: array `(n_a, d)`.
        features_b: array `(n_b, d)`.

    Returns:
        float.

    Example:

    >>> a = np.array([[0.0], [2.0]])  # mean 1, variance 1
    >>> b = np.array([[3.0], [7.0]])  # mean 5, variance 4
    >>> frechet_distance(a, b)  # (5 - 1)^2 + (2 - 1)^2
    17.0
    """
    a = np.asarray(features_a, dtype="float64")
    b = np.asarray(features_b, dtype="float64")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            "features must be two (n, d) arrays with the same d and n >= 2. "
            f"Received: shapes {a.shape} and {b.shape}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False, bias=True))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False, bias=True))
    vals, vecs = np.linalg.eigh(cov_a)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(value, 0.0))


def generator_quality(
    generator,
    data,
    classifier=None,
    samples_per_class=100,
    seed=0,
    batch_size=256,
):
    """Class fidelity and Frechet distance of a conditional generator.

    Args:
        generator: a model following the generator protocol
            (`keras_mgr.generators`).
        data: the `keras_mgr.datasets.Dataset` the generator was trained on.
        classifier: judge model from images to logits with a layer named
            `"features"`; `None` trains `train_feature_classifier(data)`.
        samples_per_class: int, generated images per class.
        seed: int, seed of the latents (and of the judge's training).
        batch_size: int, generation and inference batch size.

    Returns:
        Dict with:
        - `accuracy`, `per_class_accuracy` (list): judge accuracy on generated
          images, against the requested labels;
        - `real_test_accuracy`, `real_per_class_accuracy`: the judge on real
          test images (the ceiling to read the above against);
        - `fid`: generated vs. real test features; `fid_train`: generated vs.
          real training features; `real_fid`: real training vs. real test (the
          floor for `fid`);
        - `samples_per_class`, `num_train`, `num_test`.
    """
    if classifier is None:
        classifier = train_feature_classifier(data, seed=seed)
    both = keras.Model(
        classifier.inputs, [classifier.outputs[0], classifier.get_layer(FEATURE_LAYER).output]
    )
    labels = np.repeat(np.arange(data.num_classes, dtype="int32"), samples_per_class)
    fake = sample(generator, labels, seed, batch_size)

    def judge(images):
        logits, feats = both.predict(images, batch_size=batch_size, verbose=0)
        return logits.argmax(-1), feats

    fake_pred, fake_feat = judge(fake)
    test_pred, test_feat = judge(data.x_test)
    _, train_feat = judge(data.x_train)
    return {
        "accuracy": float(np.mean(fake_pred == labels)),
        "per_class_accuracy": _per_class(fake_pred, labels, data.num_classes),
        "real_test_accuracy": float(np.mean(test_pred == data.y_test)),
        "real_per_class_accuracy": _per_class(test_pred, data.y_test, data.num_classes),
        "fid": frechet_distance(fake_feat, test_feat),
        "fid_train": frechet_distance(fake_feat, train_feat),
        "real_fid": frechet_distance(train_feat, test_feat),
        "samples_per_class": int(samples_per_class),
        "num_train": int(len(data.y_train)),
        "num_test": int(len(data.y_test)),
    }


def _per_class(pred, labels, num_classes):
    return [
        float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else float("nan")
        for c in range(num_classes)
    ]
