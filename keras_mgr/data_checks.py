"""Checks of the data `fit`, `evaluate` and `predict` receive, on the host,
before anything runs; each failure quotes what was received.

NumPy arrays are checked in full, a `tf.data.Dataset` on its element spec and
its first batch. Python generators and `keras.utils.PyDataset` cannot be
read ahead without consuming them: they, and every later batch of a dataset,
are checked in the step (`keras_mgr.batch_checks`).
"""

import inspect

import keras
import numpy as np

from keras_mgr import backend, checks

# Slack around the generator's value range that real images may use.
RANGE_SLACK = 0.05
# Nouns for the data each public method receives, in messages.
_NOUNS = {"fit": "training", "evaluate": "evaluation", "validation_data": "validation"}


def fit_arguments(model, x, y, args, kwargs):
    """`fit`'s `(x, y, kwargs)` with its positional arguments named, Python
    lists made arrays, and everything checked before the first step:
    `fit_data` on `x, y` and on `validation_data`, and `batch_size`,
    `validation_batch_size` and `epochs` as integers >= 1 (Keras fails on
    them deep in TensorFlow, or trains no epoch for `epochs=-1`), and
    `checks.checkpoint_callbacks`."""
    num_classes, image_shape = model.num_classes, model.image_shape
    value_range = model.batch_check.value_range
    positional = dict(zip(list(inspect.signature(keras.Model.fit).parameters)[3:], args))
    if set(positional) & set(kwargs):
        raise TypeError(f"fit() got multiple values for {sorted(set(positional) & set(kwargs))}")
    kwargs = {**positional, **kwargs}
    x, y = as_array(x, "x"), as_array(y, "y")
    fit_data(x, y, num_classes, image_shape, value_range)
    for name in ("batch_size", "validation_batch_size"):
        kwargs[name] = checks.number(name, kwargs.get(name), 1, integer=True, allow_none=True)
    checks.checkpoint_callbacks(model, kwargs.get("callbacks"))
    if "epochs" in kwargs:
        kwargs["epochs"] = checks.number("epochs", kwargs["epochs"], 1, integer=True)
    validation = kwargs.get("validation_data")
    if isinstance(validation, (tuple, list)):
        if len(validation) < 2 or validation[1] is None:
            raise ValueError("validation_data needs labels: pass (images, labels) or "
                             "(images, labels, sample_weight). Received: validation_data of "
                             f"{len(validation)} item(s) without labels")
        validation = (as_array(validation[0], "validation_data images"),
                      as_array(validation[1], "validation_data labels"), *validation[2:])
        kwargs["validation_data"] = validation
        fit_data(*validation[:2], num_classes, image_shape, value_range, "validation_data")
    elif validation is not None:
        fit_data(validation, None, num_classes, image_shape, value_range, "validation_data")
    return x, y, kwargs


def as_array(value, what):
    """A Python list as a NumPy array (Keras reads a list as several inputs and
    fails with a dump of the data); anything else unchanged."""
    if not isinstance(value, list):
        return value
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{what} must be an array, or a list NumPy can make one array of. "
                         f"Received: a list of {len(value)} items ({error})") from None


def fit_data(x, y, num_classes, image_shape=None, value_range=None, what="fit"):
    """Checks labelled data (`what` receives it: `"fit"`, `"evaluate"`,
    `"validation_data"`): NumPy arrays in full, a `tf.data.Dataset` on its
    element spec and its first batch; other inputs are left to the step.

    `value_range`: the `(low, high)` the generator's images span; real images
    must lie in it too (5% slack), so 0..255 images against a [-1, 1]
    generator fail here instead of training silently wrong.
    """
    try:
        _labelled(x, y, num_classes, image_shape, value_range, what)
    except ValueError as error:
        if what == "fit" or str(error).startswith(what):
            raise
        raise ValueError(f"In {what}: {error}") from None


def _labelled(x, y, num_classes, image_shape, value_range, what):
    if backend.is_tf_dataset(x):
        return _dataset(x, num_classes, image_shape, value_range, what)
    if x is None or not hasattr(x, "shape"):
        return
    _arrays(x, y, image_shape, value_range, f"{what} needs labels: pass y (int class ids or "
            "one-hot).", _NOUNS[what])
    y = np.asarray(y)
    if y.dtype.kind in "USO":
        raise ValueError("Labels must be int class ids or one-hot, not strings or "
                         f"objects. Received: labels of dtype {y.dtype}, e.g. "
                         f"{y.reshape(-1)[:3].tolist()}")
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"x and y differ in length. Received: x of shape "
                         f"{tuple(x.shape)}, y of shape {y.shape}")
    numpy_labels(y, num_classes)


def evaluate_arguments(model, x, y, kwargs):
    """`evaluate`'s `(x, y)`, Python lists made arrays, checked as `fit_data`
    does; every batch is then checked in the step and read on the host
    after it (`batch_checks.make_checked_test_function`). `fit`'s validation
    (Keras calls `evaluate` with a cached dataset) was checked up front by
    `fit_arguments`."""
    check = model.batch_check
    cached = kwargs.get("_use_cached_eval_dataset", False)
    if not cached:
        x, y = as_array(x, "x"), as_array(y, "y")
        fit_data(x, y, model.num_classes, model.image_shape, check.value_range, "evaluate")
    check.begin("validation" if cached else "evaluate")
    return x, y


def predict_arguments(model, x):
    """`predict`'s `x`, a Python list made an array, its size checked when
    known (an array, a dataset's element spec) and an array's values against
    the range training held real images to; `call` checks the rest."""
    x = as_array(x, "x")
    spec = x.element_spec if backend.is_tf_dataset(x) else None
    spec = spec[0] if isinstance(spec, tuple) else spec
    if hasattr(x if spec is None else spec, "shape"):
        model.batch_check.static_shape(x if spec is None else spec)
    if isinstance(x, np.ndarray) and x.ndim == len(model.image_shape) + 1:
        _images(x, None, model.batch_check.value_range, "x")
    return x


def _arrays(x, y, image_shape, value_range, needs_labels, noun="training"):
    """Checks shared by the NumPy inputs of both `fit`s: not empty, images
    (shape, value range), labels present (`needs_labels` says how)."""
    if len(x) == 0:
        raise ValueError(f"The {noun} data is empty. Received: x of shape {x.shape}")
    _images(x, image_shape, value_range, "x")
    if y is None:
        raise ValueError(f"{needs_labels} Received: x of shape {tuple(x.shape)} and y=None")


def _images(x, image_shape, value_range, what):
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"Images of shape {tuple(image_shape)} were expected by the backbone. "
            f"Received: {what} of shape {tuple(x.shape)}"
        )
    if value_range is None or not np.size(x):
        return
    low, high = (float(v) for v in value_range)
    slack = RANGE_SLACK * (high - low)
    x_min, x_max = float(np.min(x)), float(np.max(x))
    if x_min < low - slack or x_max > high + slack:
        raise ValueError(
            f"Images must lie in the generator's value range [{low:g}, {high:g}] (the "
            f"synthetic images do). Received: {what} with values in [{x_min:g}, {x_max:g}]. "
            "Rescale them, e.g. x / 127.5 - 1 for 0..255 into [-1, 1]")


def _dataset(ds, num_classes, image_shape, value_range, what="fit"):
    """Element-spec and first-batch checks of a labelled `tf.data.Dataset`."""
    import tensorflow as tf

    noun = _NOUNS[what]
    if int(ds.cardinality()) == 0:
        raise ValueError(f"The {noun} dataset is empty. Received: {ds!r} with cardinality 0")
    spec = ds.element_spec
    if isinstance(spec, dict) or not isinstance(spec, tuple) or not 2 <= len(spec) <= 3 or (
            any(not isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(
            f"A {noun} dataset must yield (images, labels) or (images, labels, "
            "sample_weight) tuples of tensors; map dicts or images alone into that "
            f"form. Received: element_spec {spec}")
    images, labels = spec[0], spec[1]
    if image_shape is not None and images.shape.rank == len(image_shape):
        raise ValueError(
            f"The {noun} dataset yields single images: batch it, e.g. "
            f"dataset.batch(32). Received: element_spec images {images.shape}")
    if image_shape is not None and not images.shape[1:].is_compatible_with(image_shape):
        raise ValueError(
            f"Images of shape {tuple(image_shape)} were expected by the backbone. "
            f"Received: dataset images of shape {images.shape}")
    if labels.dtype == tf.string:
        raise ValueError("Labels must be int class ids or one-hot, not strings. "
                         f"Received: dataset labels {labels}")
    rank = labels.shape.rank
    if rank is not None and (rank not in (1, 2) or rank == 2 and labels.shape[1] not in (
            1, num_classes, None)):
        raise ValueError(
            "Labels must be int class ids of shape (batch,) or (batch, 1), or one-hot of "
            f"shape (batch, {num_classes}) for num_classes={num_classes}. Received: dataset "
            f"labels of shape {tuple(labels.shape)}")
    try:
        first = next(iter(ds.take(1)))
    except StopIteration:
        raise ValueError(f"The {noun} dataset is empty: it yielded no batch. "
                         f"Received: {ds!r}") from None
    _images(np.asarray(first[0]), image_shape, value_range, f"a first {noun} dataset batch")
    numpy_labels(np.asarray(first[1]), num_classes)


def gan_data(x, y, num_classes, image_shape, value_range=None):
    """Checks `ConditionalGAN.fit`'s inputs: batched `(images, labels)` with
    int class ids (the GAN embeds ids; one-hot labels are refused), images
    in `value_range` (the generator's output range, 5% slack)."""
    if backend.is_tf_dataset(x):
        _dataset(x, num_classes, image_shape, value_range)
        labels = x.element_spec[1]
        if labels.shape.rank == 2 and labels.shape[1] != 1:
            raise ValueError(
                "ConditionalGAN.fit takes int class ids of shape (batch,), not one-hot "
                "labels: map them with tf.argmax(labels, -1). Received: dataset labels of "
                f"shape {tuple(labels.shape)}")
        return
    if x is None or not hasattr(x, "shape"):
        return
    _arrays(x, y, image_shape, value_range, "ConditionalGAN.fit needs labels (int class ids).")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] != 1 or y.ndim > 2 or len(y) != len(x):
        raise ValueError(
            f"ConditionalGAN.fit takes one int class id per image, shape ({len(x)},): map "
            f"one-hot labels with argmax. Received: labels of shape {y.shape} for images "
            f"of shape {tuple(x.shape)}")
    numpy_labels(y, num_classes)


def numpy_labels(y, num_classes):
    """Validates NumPy labels: format, integrality and range."""
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        bad = ~np.all((y == 0) | (y == 1), axis=1) | (y.sum(axis=1) != 1)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(
                f"Labels of shape {y.shape} look one-hot but rows are not one-hot "
                f"(values in {{0, 1}}, one 1 per row). Received: first row {y[i].tolist()} "
                f"not one-hot, at index {i}")
        return
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            "Labels must be int class ids of shape (n,) or (n, 1), or one-hot of "
            f"shape (n, {num_classes}) for num_classes={num_classes}. "
            f"Received: labels of shape {y.shape}"
        )
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(
            "Labels must be integer class ids. Received: non-integer values such as "
            f"{y[np.mod(y, 1) != 0][:3].tolist()}"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels must be class ids in [0, {num_classes}) for num_classes="
            f"{num_classes}. Received: labels in [{y.min()}, {y.max()}]"
        )
