"""Input checks that fail early with a message quoting what was received."""

import numpy as np
from keras import ops


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


def fit_data(x, y, num_classes, image_shape=None):
    """Checks NumPy (or tf.data) inputs of `fit` before any tracing."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError(
                f"The training dataset is empty. Received: {x!r} with cardinality 0"
            )
        return
    if x is None or not hasattr(x, "shape"):
        return
    if len(x) == 0:
        raise ValueError(f"The training data is empty. Received: x of shape {x.shape}")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"Images of shape {tuple(image_shape)} were expected by the backbone. "
            f"Received: x of shape {tuple(x.shape)}"
        )
    if y is not None and hasattr(y, "shape"):
        numpy_labels(np.asarray(y), num_classes)


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
