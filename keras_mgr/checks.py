"""Input checks that fail early with a message quoting what was received."""

import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

_CROSSENTROPY = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def class_ids(labels, num_classes):
    """Int32 class ids from int ids `(n,)` / `(n, 1)` or one-hot `(n, num_classes)`.

    Decided from the static shape, so it costs nothing inside the step.
    """
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[-1] == num_classes and num_classes > 1:
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    if len(shape) == 2 and shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    elif len(shape) != 1:
        raise ValueError(
            "Labels must be int class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}) for num_classes={num_classes}. "
            f"Received: labels of shape {shape} and dtype {labels.dtype}"
        )
    return ops.cast(labels, "int32")


def fit_data(x, y, num_classes, image_shape=None, value_range=None):
    """Checks `fit`'s inputs before any tracing: NumPy arrays in full, a
    `tf.data.Dataset` on its element spec and its first batch.

    `value_range`: the `(low, high)` the generator's images span; real images
    must lie in it too (5% slack), so 0..255 images against a [-1, 1]
    generator fail here instead of training silently wrong.
    """
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return _dataset(x, num_classes, image_shape, value_range)
    if x is None or not hasattr(x, "shape"):
        return
    _arrays(x, y, image_shape, value_range, "fit needs labels: pass y (int class ids or "
            "one-hot).")
    if hasattr(y, "shape"):
        y = np.asarray(y)
        if y.dtype.kind in "USO":
            raise ValueError("Labels must be int class ids or one-hot, not strings or "
                             f"objects. Received: labels of dtype {y.dtype}, e.g. "
                             f"{y.reshape(-1)[:3].tolist()}")
        if len(y) != len(x):
            raise ValueError(f"x and y differ in length. Received: x of shape "
                             f"{tuple(x.shape)}, y of shape {y.shape}")
        numpy_labels(y, num_classes)


def _arrays(x, y, image_shape, value_range, needs_labels):
    """Checks shared by the NumPy inputs of both `fit`s: not empty, images
    (shape, value range), labels present (`needs_labels` says how)."""
    if len(x) == 0:
        raise ValueError(f"The training data is empty. Received: x of shape {x.shape}")
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
    slack = 0.05 * (high - low)
    x_min, x_max = float(np.min(x)), float(np.max(x))
    if x_min < low - slack or x_max > high + slack:
        raise ValueError(
            f"Images must lie in the generator's value range [{low:g}, {high:g}] (the "
            f"synthetic images do). Received: {what} with values in [{x_min:g}, {x_max:g}]. "
            "Rescale them, e.g. x / 127.5 - 1 for 0..255 into [-1, 1]")


def _dataset(ds, num_classes, image_shape, value_range):
    """Element-spec and first-batch checks of a training `tf.data.Dataset`."""
    import tensorflow as tf

    if int(ds.cardinality()) == 0:
        raise ValueError(f"The training dataset is empty. Received: {ds!r} with cardinality 0")
    spec = ds.element_spec
    if isinstance(spec, dict) or not isinstance(spec, tuple) or not 2 <= len(spec) <= 3 or (
            any(not isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(
            "A training dataset must yield (images, labels) or (images, labels, "
            "sample_weight) tuples of tensors; map dicts or images alone into that "
            f"form. Received: element_spec {spec}")
    images, labels = spec[0], spec[1]
    if image_shape is not None and images.shape.rank == len(image_shape):
        raise ValueError(
            "The training dataset yields single images: batch it, e.g. "
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
        raise ValueError(f"The training dataset is empty: it yielded no batch. "
                         f"Received: {ds!r}") from None
    _images(np.asarray(first[0]), None, value_range, "a first dataset batch")
    numpy_labels(np.asarray(first[1]), num_classes)


def gan_data(x, y, num_classes, image_shape):
    """Checks `ConditionalGAN.fit`'s inputs: batched `(images, labels)` with
    int class ids (the GAN embeds ids; one-hot labels are refused)."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        _dataset(x, num_classes, image_shape, None)
        labels = x.element_spec[1]
        if labels.shape.rank == 2 and labels.shape[1] != 1:
            raise ValueError(
                "ConditionalGAN.fit takes int class ids of shape (batch,), not one-hot "
                "labels: map them with tf.argmax(labels, -1). Received: dataset labels of "
                f"shape {tuple(labels.shape)}")
        return
    if x is None or not hasattr(x, "shape"):
        return
    _arrays(x, y, image_shape, None, "ConditionalGAN.fit needs labels (int class ids).")
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
        if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
            raise ValueError(
                f"Labels of shape {y.shape} look one-hot but rows are not one-hot "
                f"(values in {{0, 1}}, one 1 per row). Received: first row {y[0].tolist()}"
            )
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


def logits_loss(loss):
    """The classification loss `compile` receives, made to work on logits.

    The head outputs logits and labels reach the loss as int class ids, so a
    cross-entropy given by name (or as Keras's function) becomes
    `SparseCategoricalCrossentropy(from_logits=True)`. A loss object built
    for probabilities (`from_logits=False`) would train on logits silently
    wrong: refused, as is any other loss name.
    """
    if isinstance(loss, str) or loss in (keras.losses.sparse_categorical_crossentropy,
                                         keras.losses.categorical_crossentropy):
        name = loss if isinstance(loss, str) else loss.__name__
        if name not in _CROSSENTROPY:
            raise ValueError(
                f"loss given by name must be one of {_CROSSENTROPY} (computed on the "
                "head's logits); pass a callable `loss(class_ids, logits)` for anything "
                f"else. Received: loss={loss!r}")
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if getattr(loss, "from_logits", None) is False or (
            hasattr(loss, "get_config") and loss.get_config().get("from_logits") is False):
        raise ValueError(
            "The model's head outputs logits, but this loss expects probabilities "
            "(from_logits=False): it would train silently wrong. Use "
            "from_logits=True (or loss=\"auto\"). Received: "
            f"{type(loss).__name__} with from_logits=False")
    return loss


def choice(name, value, choices):
    """Raises a ValueError quoting `value` unless it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def count_or_auto(name, value):
    """`"auto"`, or `value` as an integer >= 1 (ValueError quoting it)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, str):
        raise ValueError(f"{name} must be an integer >= 1 or 'auto'. Received: {name}={value!r}")
    return number(name, value, 1, integer=True)


def number(name, value, low=0.0, strict=False, integer=False, allow_none=False):
    """`value` as a float (int if `integer`) >= `low` (> if `strict`), or
    ValueError quoting it. Refuses bools, NaN/inf, and 2.7 for an integer."""
    if value is None and allow_none:
        return None
    bound = f"{'>' if strict else '>='} {low:g}"
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(
        value) and (value > low if strict else value >= low) and (
        not integer or float(value) == int(value))
    if not ok:
        raise ValueError(f"{name} must be {kind} {bound}"
                         f"{' or None' if allow_none else ''}. Received: {name}={value!r}")
    return int(value) if integer else float(value)


# The wrap() options each part of the method reads (docs/method.md's modes).
_SYNTHETIC = ("synthetic_batch_size", "resize_synthetic", "synthetic_pool_size")
_PCR = ("consistency", "pcr_weight", "augmentation")
_GDA = ("gda_weight",)
_FINDER = ("meta_every", "meta_gradient", "finder_learning_rate", "finder_hidden_dim",
           "finder_num_layers",
           "finder_conditional", "finder_max_shift", "meta_batch_size",
           "lookahead_training", "finite_difference_epsilon", "latent_space",
           "meta_microbatches")
_USED = {"base": (), "gda": _SYNTHETIC + _GDA, "metagda": _SYNTHETIC + _GDA + _FINDER,
         "pcr": _SYNTHETIC + _PCR, "mgr": _SYNTHETIC + _PCR + _FINDER}


def warn_unused(mode, given, defaults):
    """Warns, naming them, about options set away from their default that
    `mode` never reads (nothing is silently ignored)."""
    if mode not in _USED:
        return []
    unused = [name for name in _SYNTHETIC + _PCR + _GDA + _FINDER
              if name not in _USED[mode] and name in given
              and not _same(given[name], defaults[name])]
    if unused:
        received = ", ".join(f"{n}={given[n]!r}" for n in unused)
        warnings.warn(f"mode={mode!r} does not use {', '.join(unused)}: ignored. "
                      f"Received: {received}", stacklevel=3)
    return unused


def _same(value, default):
    try:
        return bool(value == default)
    except Exception:  # an array or a layer compared to a default
        return value is default


def checkpoint_callbacks(model, callbacks):
    """Before the first epoch: a `ModelCheckpoint` writing whole `.keras`
    files needs a serializable model (a `GeneratorAdapter` around a plain
    function is not); without this it fails only at the first epoch's end."""
    for callback in callbacks or []:
        path = str(getattr(callback, "filepath", ""))
        if not (isinstance(callback, keras.callbacks.ModelCheckpoint)
                and path.endswith(".keras") and not callback.save_weights_only):
            continue
        try:
            keras.saving.serialize_keras_object(model)
        except Exception as error:
            raise ValueError(
                f"ModelCheckpoint({path!r}) saves the whole model, which cannot be "
                "serialized here: checkpoint weights instead (a '.weights.h5' path, "
                "save_weights_only=True), or make the generator serializable. Received: "
                f"serializing raised {type(error).__name__}: {error}") from error
